package kafkaconn

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/internal/testkit"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOncePerEpisode: a message repeated during an outage is one WARN (the
// rest at DEBUG); after Reset it warns again; errors stay errors.
func TestOncePerEpisode(t *testing.T) {
	logs := &testkit.LogBuffer{}
	k := NewLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for range 5 {
		k.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "b1")
	}
	k.Log(kgo.LogLevelError, "fatal", "err", "x")
	count := func(level, msg string) int {
		return strings.Count(logs.String(), "level="+level+` msg="kafka: `+msg)
	}
	if w, d := count("WARN", "unable to open"), count("DEBUG", "unable to open"); w != 1 || d != 4 {
		t.Errorf("%d WARN and %d DEBUG lines, want 1 and 4:\n%s", w, d, logs)
	}
	if e := count("ERROR", "fatal"); e != 1 {
		t.Errorf("%d ERROR lines, want 1:\n%s", e, logs)
	}
	k.Reset()
	k.Log(kgo.LogLevelWarn, "unable to open connection to broker")
	if w := count("WARN", "unable to open"); w != 2 {
		t.Errorf("%d WARN lines after Reset, want 2:\n%s", w, logs)
	}
	if k.Level() != kgo.LogLevelWarn {
		t.Errorf("level %v, want warn", k.Level())
	}
}

// TestSeenBounded: more distinct messages than maxSeen are all logged, and
// the memory of them stays bounded.
func TestSeenBounded(t *testing.T) {
	k := NewLogger(slog.New(slog.DiscardHandler))
	for i := range maxSeen * 2 {
		k.Log(kgo.LogLevelWarn, strings.Repeat("m", i+1))
	}
	if len(k.seen) != maxSeen {
		t.Errorf("%d messages remembered, want %d", len(k.seen), maxSeen)
	}
}
