//go:build unix

package state

import (
	"errors"
	"fmt"
	"os"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/pspf/pspf-edge/internal/flock"
)

// checkFile is Open's look at the file before bbolt maps it: the note left
// by Close when the file was found damaged in use, then its structure
// (verifyFile), read under a shared flock so that the file is not read
// while another process writes it. It waits up to timeout for the lock and
// fails like bbolt then (berrors.ErrTimeout).
func checkFile(path string, timeout time.Duration) (fileReport, error) {
	note, err := readNote(path)
	if err != nil {
		return fileReport{}, err
	}
	if note != "" {
		return fileReport{}, fmt.Errorf("found damaged while in use (%s): %w", note, ErrCorrupt)
	}
	return verifyFile(path, func(f *os.File) (func(), error) {
		unlock, err := flock.Shared(f, timeout)
		if errors.Is(err, flock.ErrLocked) {
			return nil, fmt.Errorf("held by another process: %w", berrors.ErrTimeout)
		}
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		return unlock, nil
	})
}
