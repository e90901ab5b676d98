package wait

import (
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

// TestUntil runs in a synctest bubble: its clock moves only when Until
// pauses, so the times and call counts below are exact.
func TestUntil(t *testing.T) {
	t.Run("holds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			calls := 0
			if !Until(time.Second, func() bool { calls++; return time.Since(start) >= 30*time.Millisecond }) {
				t.Fatal("got false, want true: the condition holds after 30ms")
			}
			// Pauses of 1, 2, 4, 8, 16 and 20ms: the condition is first seen at 31ms.
			if got, want := time.Since(start), 31*time.Millisecond; got != want {
				t.Errorf("returned after %v, want %v", got, want)
			}
			if calls != 6 {
				t.Errorf("got %d calls, want 6", calls)
			}
		})
	})
	t.Run("never", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			var last time.Duration
			if Until(time.Second, func() bool { last = time.Since(start); return false }) {
				t.Fatal("got true for a condition that never holds")
			}
			if got := time.Since(start); got != time.Second {
				t.Errorf("returned after %v, want the deadline (1s)", got)
			}
			if last != time.Second {
				t.Errorf("last call at %v, want one at the deadline (1s)", last)
			}
		})
	})
	t.Run("no time", func(t *testing.T) {
		calls := 0
		if Until(0, func() bool { calls++; return false }) || calls != 1 {
			t.Errorf("got %d calls, want 1 even without time to wait", calls)
		}
	})
}

// TestFor checks that For passes once the condition holds and fails the
// test, naming what it waited for, when it does not.
func TestFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ready := make(chan struct{})
		go func() { time.Sleep(100 * time.Millisecond); close(ready) }() // on the bubble's clock
		For(t, time.Second, "ready", func() bool {
			select {
			case <-ready:
				return true
			default:
				return false
			}
		})
	})
	ft := &fatalT{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine, as it ends a test
		defer close(done)
		For(ft, 0, "the moon", func() bool { return false })
	}()
	<-done
	if want := "timed out after 0s waiting for the moon"; ft.msg != want {
		t.Errorf("got %q, want %q", ft.msg, want)
	}
}

// fatalT records the message of Fatalf instead of failing the test.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
