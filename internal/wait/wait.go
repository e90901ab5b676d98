// Package wait is how tests wait for something that another goroutine or
// process makes happen: they poll a condition until it holds or a deadline
// passes. A fixed time.Sleep is the alternative it replaces: too short on a
// loaded machine, where the test then flakes, and too long everywhere else.
//
// Code whose waits run on timers is better tested in a testing/synctest
// bubble or with an injected clock; this package is for the rest: sockets,
// child processes, brokers, files.
package wait

import (
	"testing"
	"time"
)

// maxPause is the longest pause between two calls of a condition: about the
// delay a test adds by seeing late what already holds.
const maxPause = 20 * time.Millisecond

// Until calls cond until it returns true, and reports whether it did so
// within d. cond is called at least once, on the caller's goroutine, and
// once more at the deadline. Between calls Until pauses 1ms at first,
// doubling up to 20ms: what holds soon is seen soon, and a slow condition
// costs few calls.
func Until(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	pause := time.Millisecond
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, maxPause)
	}
}

// For is Until that fails the test with t.Fatalf, naming what it waited for,
// when cond does not hold within d. Like t.Fatalf, it must be called from
// the goroutine running the test; other goroutines use Until.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
