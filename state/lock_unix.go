//go:build unix

package state

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// lockPoll is how often checkFile tries the lock again, as bbolt does.
const lockPoll = 50 * time.Millisecond

// checkFile is Open's look at the file before bbolt maps it: the note left
// by Close when the file was found damaged in use, then its structure
// (verifyData), read under a shared flock so that the file is not read while
// another process writes it. It waits up to timeout for the lock and fails
// like bbolt then (berrors.ErrTimeout).
func checkFile(path string, timeout time.Duration) (fileReport, error) {
	note, err := readNote(path)
	if err != nil {
		return fileReport{}, err
	}
	if note != "" {
		return fileReport{}, fmt.Errorf("found damaged while in use (%s): %w", note, ErrCorrupt)
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileReport{empty: true}, nil
	}
	if err != nil {
		return fileReport{}, err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fileReport{}, fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			return fileReport{}, fmt.Errorf("held by another process: %w", berrors.ErrTimeout)
		}
		time.Sleep(lockPoll)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	st, err := f.Stat()
	if err != nil {
		return fileReport{}, err
	}
	if st.Size() == 0 {
		return fileReport{empty: true}, nil
	}
	return verifyData(f, st.Size())
}
