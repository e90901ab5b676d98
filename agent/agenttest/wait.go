package agenttest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects a test's log output, for a slog handler that writes to
// it; it is safe for concurrent use (a pipeline logs from many goroutines).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Eventually polls cond every few milliseconds until it returns true, and
// fails the test, saying what it waited for and showing show (a log) if
// given, when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, show fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			detail := ""
			if show != nil {
				detail = "\nlog:\n" + show.String()
			}
			t.Fatalf("timeout waiting for %s%s", what, detail)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
