//go:build unix

package flock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	l, err := Exclusive(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if got := Owner(path); got != "?" {
		t.Errorf("owner before WriteOwner: got %q, want ?", got)
	}
	if err := l.WriteOwner(); err != nil {
		t.Fatal(err)
	}
	if got, want := Owner(path), strconv.Itoa(os.Getpid()); got != want {
		t.Errorf("owner: got %q, want %q", got, want)
	}
	// A second lock on the file, even in this process, is refused at once.
	if _, err := Exclusive(path, 0o600); !errors.Is(err, ErrLocked) {
		t.Errorf("second Exclusive: got %v, want ErrLocked", err)
	}
	l.Release()
	l.Release()
	l2, err := Exclusive(path, 0o600)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l2.Release()
	if _, err := Exclusive(filepath.Join(t.TempDir(), "no", "such", "dir"), 0o600); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("in a missing directory: got %v, want the open error", err)
	}
}

func TestShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	l, err := Exclusive(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Shared(f, 120*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("under an exclusive lock: got %v, want ErrLocked after the timeout", err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(60 * time.Millisecond)
		l.Release()
		close(released)
	}()
	unlock, err := Shared(f, 10*time.Second)
	if err != nil {
		t.Fatalf("once released: %v", err)
	}
	<-released
	// Shared locks go together; an exclusive one waits for them.
	g, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	unlock2, err := Shared(g, 0)
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	if _, err := Exclusive(path, 0o600); !errors.Is(err, ErrLocked) {
		t.Errorf("exclusive under shared locks: got %v, want ErrLocked", err)
	}
	unlock()
	unlock2()
	l3, err := Exclusive(path, 0o600)
	if err != nil {
		t.Fatalf("after the shared locks: %v", err)
	}
	l3.Release()
}
