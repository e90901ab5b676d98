// Package testkit holds the test helpers that packages on every level
// share: buffer and state, whose tests cannot import agent/agenttest (it
// builds on them), as well as the runtime and the connectors, through
// agenttest. It depends on the standard library and internal/wait alone.
package testkit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// LogBuffer collects a test's log output, for a slog handler that writes to
// it; it is safe for concurrent use (a pipeline or a log logs from many
// goroutines). The zero LogBuffer is empty and ready.
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

// Logger returns a logger that writes text lines (key=value) to l, from
// level up.
func (l *LogBuffer) Logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level}))
}

// JSONLogger returns a logger that writes JSON records to l, from level
// up, for Records.
func (l *LogBuffer) JSONLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: level}))
}

// Lines returns the lines written so far that contain every one of parts
// (all of them without parts).
func (l *LogBuffer) Lines(parts ...string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		line = strings.TrimSuffix(line, "\n")
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// Count returns how many lines contain every one of parts.
func (l *LogBuffer) Count(parts ...string) int { return len(l.Lines(parts...)) }

// Records decodes the JSON records written so far (see JSONLogger) whose
// message contains msg. A line that is not JSON fails t.
func (l *LogBuffer) Records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range l.Lines() {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if s, _ := m["msg"].(string); strings.Contains(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// Eventually is wait.For that also shows show (a log), if given, when it
// fails: it polls cond (wait.Until) until it returns true, and fails the
// test, saying what it waited for, when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, show fmt.Stringer) {
	t.Helper()
	if wait.Until(timeout, cond) {
		return
	}
	detail := ""
	if show != nil {
		detail = "\nlog:\n" + show.String()
	}
	t.Fatalf("timeout waiting for %s%s", what, detail)
}
