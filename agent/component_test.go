package agent_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// TestMkDataDir creates a component's directory 0750 whatever the umask.
func TestMkDataDir(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "components", "uplink")
	got, err := agent.Env{DataDir: dir}.MkDataDir()
	if err != nil || got != dir {
		t.Fatalf("MkDataDir = %q, %v", got, err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != agent.DataDirPerm {
			t.Errorf("%s: mode %v, %v; want %v", d, fi.Mode().Perm(), err, agent.DataDirPerm)
		}
	}
	if _, err := (agent.Env{}).MkDataDir(); err == nil {
		t.Error("MkDataDir without a DataDir: got nil error")
	}
}
