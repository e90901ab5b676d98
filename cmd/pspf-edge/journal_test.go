package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestJournalHandler(t *testing.T) {
	tests := []struct {
		name string
		json bool
		log  func(l *slog.Logger)
		want string
	}{
		{"debug", false, func(l *slog.Logger) { l.Debug("d") }, "<7>level=DEBUG msg=d\n"},
		{"info", false, func(l *slog.Logger) { l.Info("i", "k", 1) }, "<6>level=INFO msg=i k=1\n"},
		{"warn", false, func(l *slog.Logger) { l.Warn("w") }, "<4>level=WARN msg=w\n"},
		{"error", false, func(l *slog.Logger) { l.Error("e") }, "<3>level=ERROR msg=e\n"},
		{"above error", false, func(l *slog.Logger) { l.Log(t.Context(), slog.LevelError+4, "x") }, "<3>level=ERROR+4 msg=x\n"},
		{"attrs and group", false, func(l *slog.Logger) { l.With("p", "temp").WithGroup("g").Warn("w", "n", 2) }, "<4>level=WARN msg=w p=temp g.n=2\n"},
		{"json", true, func(l *slog.Logger) { l.Error("e") }, "<3>{\"level\":\"ERROR\",\"msg\":\"e\"}\n"},
		{"newline quoted", false, func(l *slog.Logger) { l.Info("a\nb") }, "<6>level=INFO msg=\"a\\nb\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(newJournalHandler(&buf, tt.json, &slog.HandlerOptions{Level: slog.LevelDebug})))
			if got := buf.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestJournalWriterPrefixesEveryLine(t *testing.T) {
	var buf bytes.Buffer
	w := &journalWriter{w: &buf, prio: '4'}
	n, err := w.Write([]byte("one\ntwo\n"))
	if err != nil || n != 8 {
		t.Fatalf("got %d, %v, want 8, nil", n, err)
	}
	if got, want := buf.String(), "<4>one\n<4>two\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestJournalHandlerLevelAndReplaceAttr(t *testing.T) {
	var buf bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "secret" {
			a.Value = slog.StringValue("***")
		}
		return a
	}}
	l := slog.New(newJournalHandler(&buf, false, opts))
	l.Info("hidden")
	l.Warn("shown", "secret", "hunter2")
	if got, want := buf.String(), "<4>level=WARN msg=shown secret=***\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestJournalHandlerConcurrent checks that no line gets another record's
// priority when records of different levels are logged at once.
func TestJournalHandlerConcurrent(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(newJournalHandler(&buf, false, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			sub := l.With("g", i)
			for range 200 {
				if i%2 == 0 {
					sub.Error("e")
				} else {
					sub.Debug("d")
				}
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("got %d lines, want 1600", len(lines))
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "<3>level=ERROR") && !strings.HasPrefix(line, "<7>level=DEBUG") {
			t.Fatalf("got line %q, want a matching priority and level", line)
		}
	}
}
