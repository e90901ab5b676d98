package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/pspf/pspf-edge/internal/flock"
)

// lockDataDir takes an exclusive lock on the data directory so that two
// agents never share it. The lock is released by the kernel if the process
// dies; the file holds the owner's pid for the error message. A pid that
// cannot be written (a full disk) is logged: the lock holds all the same.
func lockDataDir(dir string, log *slog.Logger) (func(), error) {
	path := filepath.Join(dir, "LOCK")
	l, err := flock.Exclusive(path, 0o640)
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("data dir %s is in use by another agent (pid %s): %w", dir, flock.Owner(path), err)
	}
	if err != nil {
		return nil, fmt.Errorf("data dir: lock: %w", err)
	}
	if err := l.WriteOwner(); err != nil {
		log.Warn("data dir locked, but its lock file does not name this agent; another agent refused will not see the pid", "err", err)
	}
	return l.Release, nil
}
