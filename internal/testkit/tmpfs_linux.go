package testkit

import (
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of the given size ("192k", "1m") on a new
// temporary directory and unmounts it when the test ends: a small disk
// that fills up, for the full-disk tests. The tests run as root; without
// it the mount fails the test.
func MountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs (tests must run as root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
