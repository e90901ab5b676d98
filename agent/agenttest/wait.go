package agenttest

import (
	"fmt"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/testkit"
)

// LogBuffer collects a test's log output, for a slog handler that writes to
// it; it is safe for concurrent use (a pipeline logs from many goroutines).
// It is internal/testkit's, which the storage packages' tests share.
type LogBuffer = testkit.LogBuffer

// Eventually polls cond until it returns true (internal/wait), and fails
// the test, saying what it waited for and showing show (a log) if given,
// when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, show fmt.Stringer) {
	t.Helper()
	testkit.Eventually(t, timeout, what, cond, show)
}
