package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
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
