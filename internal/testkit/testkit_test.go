package testkit

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestLogBuffer(t *testing.T) {
	var l LogBuffer
	log := l.Logger(slog.LevelInfo)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Info("episode", "n", i) })
	}
	wg.Wait()
	log.Debug("not shown")
	log.Warn("full", "reason", "max_bytes")
	if got := l.Count("msg=episode"); got != 8 {
		t.Errorf("got %d episode lines, want 8:\n%s", got, l.String())
	}
	if got := l.Lines("level=WARN", "reason=max_bytes"); len(got) != 1 {
		t.Errorf("got %q, want the one WARN", got)
	}
	if got := l.Count("not shown"); got != 0 {
		t.Errorf("got %d debug lines, want 0", got)
	}

	var j LogBuffer
	j.JSONLogger(slog.LevelDebug).Debug("recovered after a crash", "lost", 3)
	recs := j.Records(t, "recovered")
	if len(recs) != 1 || recs[0]["lost"] != float64(3) || recs[0]["level"] != "DEBUG" {
		t.Errorf("got %v, want the one DEBUG record with lost 3", recs)
	}
	if got := j.Records(t, "nothing"); got != nil {
		t.Errorf("got %v, want none", got)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 10*time.Second, "three polls", func() bool { n++; return n == 3 }, nil)
	if n != 3 {
		t.Errorf("got %d polls, want 3", n)
	}
	var ft fakeT
	done := make(chan struct{})
	go func() {
		defer close(done)
		var l LogBuffer
		fmt.Fprint(&l, "the log")
		Eventually(&ft, 20*time.Millisecond, "never", func() bool { return false }, &l)
	}()
	<-done
	if !slices.Equal(ft.fatals, []string{"timeout waiting for never\nlog:\nthe log"}) {
		t.Errorf("got %q, want the timeout with the log", ft.fatals)
	}
}

// fakeT records Fatalf and ends the goroutine, as testing.T does.
type fakeT struct {
	testing.TB
	fatals []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
	runtime.Goexit()
}
