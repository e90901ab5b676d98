package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// slowCloseSource takes until release is closed to close, like a source
// finishing its last batch against a slow disk.
type slowCloseSource struct {
	once    *sync.Once
	closing chan struct{} // closed when Close is first called
	release chan struct{}
}

func (s slowCloseSource) Connect(context.Context) error { return nil }
func (s slowCloseSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	<-ctx.Done()
	return nil, nil, ctx.Err()
}
func (s slowCloseSource) Close(ctx context.Context) error {
	s.once.Do(func() { close(s.closing) })
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return nil
}

// notified tunes a harness's supervisor to send its notifications (READY=1,
// WATCHDOG=1, ...: see Deps.Notify) to msgs, with a watchdog every 20ms. A
// notification msgs has no room for is dropped, so that a test that stops
// reading never blocks the supervisor.
func notified(msgs chan string) func(*Deps) {
	return func(d *Deps) {
		d.Watchdog = 20 * time.Millisecond
		d.Notify = func(state string) {
			select {
			case msgs <- state:
			default:
			}
		}
	}
}

// A reload stops the old generation on the supervisor's loop, for up to
// shutdown_timeout, which may be far longer than the watchdog interval
// (WatchdogSec=2s with shutdown_timeout: 60s): the watchdog is fed
// meanwhile, and the agent is not killed for a stop that is on time.
func TestWatchdogFedWhileAReloadStopsTheOldGeneration(t *testing.T) {
	msgs := make(chan string, 4096)
	reg := testRegistry(map[string]*recorder{"s": newRecorder()})
	src := slowCloseSource{once: new(sync.Once), closing: make(chan struct{}), release: make(chan struct{})}
	type cfg struct {
		N int `yaml:"n" doc:"changes the config"`
	}
	reg.Sources["slowclose"] = agent.Typed[agent.Source]("a source slow to close", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Source, error) {
		return src, nil
	})
	h := startHarness(t, reg, map[string]string{"s.yaml": "sources:\n  - slowclose: {n: 1}\nsinks:\n  - record: {id: s}\n"}, notified(msgs))
	if got := <-msgs; got != "READY=1" {
		t.Fatalf("got %q first, want READY=1", got)
	}
	writeFile(t, filepath.Join(h.dir, "s.yaml"), "sources:\n  - slowclose: {n: 2}\nsinks:\n  - record: {id: s}\n")
	select {
	case <-src.closing:
	case <-time.After(10 * time.Second):
		t.Fatal("the reload did not stop the old generation")
	}
	// Pings sent before may still be on their way: count only those after
	// a first one that follows the stop's start.
	for len(msgs) > 0 {
		<-msgs
	}
	got := 0
	deadline := time.After(10 * time.Second)
	for got < 10 {
		select {
		case m := <-msgs:
			if m != "WATCHDOG=1" {
				t.Fatalf("got %q while the old generation stops, want WATCHDOG=1", m)
			}
			got++
		case <-deadline:
			t.Fatalf("%d watchdog pings in 10s while the old generation was stopping (within shutdown_timeout %v), want 10",
				got, h.sup.config().ShutdownTimeout)
		}
	}
	if v := h.view("s"); v.Generation != 1 {
		t.Fatalf("generation %d while the old one stops, want 1", v.Generation)
	}
	close(src.release)
	h.waitFor("generation 2", func() bool { return h.view("s").Generation == 2 })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// The watchdog is fed during a stop only for as long as the stop is bounded
// to take: past that the supervisor is stuck, and the pings stop so that
// systemd restarts the agent.
func TestWaitFedStopsFeedingAtTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		pings := 0
		s := &Supervisor{d: Deps{Watchdog: time.Second, Logger: slog.New(slog.DiscardHandler), Notify: func(state string) {
			if state == "WATCHDOG=1" {
				mu.Lock()
				pings++
				mu.Unlock()
			}
		}}}
		count := func() int { mu.Lock(); defer mu.Unlock(); return pings }

		done := make(chan struct{})
		ok := make(chan bool, 1)
		go func() { ok <- s.waitFed(done, 10500*time.Millisecond) }()
		time.Sleep(9500 * time.Millisecond)
		synctest.Wait()
		if got := count(); got != 9 {
			t.Errorf("%d pings in the first 9.5s, want 9 (one a second)", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := count(); got != 10 {
			t.Errorf("%d pings after a minute, want 10: none past the 10.5s bound", got)
		}
		close(done)
		if <-ok {
			t.Errorf("waitFed: got true, want false (the bound passed)")
		}

		done = make(chan struct{})
		go func() { ok <- s.waitFed(done, 10500*time.Millisecond) }()
		time.Sleep(3500 * time.Millisecond)
		close(done)
		if !<-ok {
			t.Errorf("waitFed: got false for a stop within the bound, want true")
		}
		if got := count(); got != 13 {
			t.Errorf("%d pings in all, want 13", got)
		}
	})
}

// The watchdog pings come from the supervisor's loop: while it is stuck
// (here: in a component's constructor during a reload) they stop, so that
// systemd would restart a hung agent; they resume once it is free.
func TestWatchdogStopsWhileTheSupervisorIsStuck(t *testing.T) {
	msgs := make(chan string, 4096)
	rec := newRecorder()
	reg := testRegistry(map[string]*recorder{"s": rec})
	entered, release := make(chan struct{}), make(chan struct{})
	type cfg struct{}
	reg.Sources["stuck"] = agent.Typed[agent.Source]("a source whose constructor blocks", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Source, error) {
		close(entered)
		<-release
		return nil, errors.New("stuck source: released")
	})
	h := startHarness(t, reg, map[string]string{"s.yaml": "sources:\n  - simulate: {format: fields, rate: 50}\nsinks:\n  - record: {id: s}\n"}, notified(msgs))
	if got := <-msgs; got != "READY=1" {
		t.Fatalf("got %q first, want READY=1", got)
	}
	writeFile(t, filepath.Join(h.dir, "stuck.yaml"), "sources:\n  - stuck: {}\nsinks:\n  - record: {id: s}\n")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the supervisor did not start the stuck pipeline")
	}
	// Pings sent before it got stuck may still be waiting in msgs: take
	// them until none has come for a while.
	for quiet := false; !quiet; {
		select {
		case <-msgs:
		case <-time.After(200 * time.Millisecond):
			quiet = true
		}
	}
	time.Sleep(300 * time.Millisecond) // 15 ping intervals
	if n := len(msgs); n != 0 {
		t.Errorf("got %d notifications while the supervisor was stuck, want none: first %q", n, <-msgs)
	}
	close(release)
	select {
	case got := <-msgs:
		if got != "WATCHDOG=1" {
			t.Errorf("got %q once free, want WATCHDOG=1", got)
		}
	case <-time.After(5 * time.Second):
		t.Error("no watchdog ping after the supervisor was free again")
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}
