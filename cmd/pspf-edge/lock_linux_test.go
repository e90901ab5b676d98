package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pspf/pspf-edge/internal/testkit"
)

// A second agent on a data directory is refused, and told which process
// holds it.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir, slog.New(slog.DiscardHandler))
	if want := "is in use by another agent (pid " + strconv.Itoa(os.Getpid()) + ")"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second lock: got %v, want %q", err, want)
	}
	unlock()
	unlock2, err := lockDataDir(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	unlock2()
}

// On a full disk the lock is taken all the same, and the pid it could not
// record is said in one WARN; a second agent is still refused.
func TestDataDirLockOnFullDisk(t *testing.T) {
	dir := testkit.MountTmpfs(t, "64k")
	fill, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = fill.Write(make([]byte, 4096))
	}
	fill.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk: got %v, want ENOSPC", err)
	}
	var logs testkit.LogBuffer
	unlock, err := lockDataDir(dir, logs.Logger(slog.LevelInfo))
	if err != nil {
		t.Fatalf("on a full disk: got %v, want the lock", err)
	}
	defer unlock()
	if got := logs.Lines("level=WARN", "does not name this agent", "no space left on device"); len(got) != 1 {
		t.Errorf("got log\n%s\nwant one WARN that the pid was not written", logs.String())
	}
	if _, err := lockDataDir(dir, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "in use by another agent (pid ?)") {
		t.Errorf("second lock: got %v, want refused, with no pid to name", err)
	}
}
