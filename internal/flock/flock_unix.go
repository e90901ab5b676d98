//go:build unix

// Package flock takes the advisory locks (flock(2)) that keep two processes
// off the same data: the agent's data directory, a log's directory, a state
// file. The kernel releases a lock when the process that holds it dies, so
// a crash leaves nothing to clean up. Locks are per open file: a second
// Exclusive on the same path fails even within one process.
package flock

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrLocked is what Exclusive returns, wrapped, when another holds the
// lock, and Shared when the wait for it timed out.
var ErrLocked = errors.New("held by another process")

// pollEvery is how often Shared tries the lock again, as bbolt does.
const pollEvery = 50 * time.Millisecond

// File is a lock file held open under an exclusive lock.
type File struct {
	f *os.File
}

// Exclusive opens the file at path for writing, creating it with perm, and
// takes an exclusive lock on it without waiting. When another holds the
// lock the error wraps ErrLocked; an error opening the file is returned as
// it is (an *os.PathError), so that a caller can tell a read-only
// directory.
func Exclusive(path string, perm os.FileMode) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return &File{f: f}, nil
}

// WriteOwner replaces the lock file's content with this process's id, for
// the message of the next process that finds it locked (Owner). Its error
// (a full disk) does not release the lock: the lock holds, only the note
// is missing.
func (l *File) WriteOwner() error {
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("write owner to %s: %w", l.f.Name(), err)
	}
	if _, err := l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("write owner to %s: %w", l.f.Name(), err)
	}
	return nil
}

// Release unlocks and closes the file. Calling it again, or on a nil File,
// does nothing.
func (l *File) Release() {
	if l == nil || l.f == nil {
		return
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN) // the close releases it too
	l.f.Close()
	l.f = nil
}

// Owner returns the process id that WriteOwner left in the lock file at
// path, or "?" when there is none to read.
func Owner(path string) string {
	b, err := os.ReadFile(path)
	if s := strings.TrimSpace(string(b)); err == nil && s != "" {
		return s
	}
	return "?"
}

// Shared takes a shared lock on f, an open file (read-only is enough),
// trying again every 50ms for up to timeout while another holds an
// exclusive one; on timeout the error wraps ErrLocked. It returns the
// function that unlocks f (closing f unlocks it too).
func Shared(f *os.File, timeout time.Duration) (unlock func(), err error) {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %w", f.Name(), ErrLocked)
		}
		time.Sleep(pollEvery)
	}
}
