package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

func TestApplyMemorySettings(t *testing.T) {
	prevLimit, prevGC := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	debug.SetGCPercent(prevGC)
	t.Cleanup(func() {
		debug.SetMemoryLimit(prevLimit)
		debug.SetGCPercent(prevGC)
	})
	const noLimit = 1<<63 - 1
	tests := []struct {
		name      string
		limit     agent.ByteSize
		gc        int
		env       map[string]string
		wantLimit int64
		wantGC    int
	}{
		{name: "from the file", limit: 24 << 20, gc: 80, wantLimit: 24 << 20, wantGC: 80},
		{name: "no limit", limit: 0, gc: 100, wantLimit: noLimit, wantGC: 100},
		{name: "environment wins", limit: 12 << 20, gc: 80, env: map[string]string{"GOMEMLIMIT": "64MiB", "GOGC": "200"}, wantLimit: 99 << 20, wantGC: 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// What the runtime would have read from the environment.
			debug.SetMemoryLimit(99 << 20)
			debug.SetGCPercent(150)
			cfg := runner.DefaultAgentConfig()
			cfg.MemoryLimit, cfg.GCPercent = tt.limit, tt.gc
			limit, gc := applyMemorySettings(cfg, func(k string) string { return tt.env[k] })
			if limit != tt.wantLimit || gc != tt.wantGC {
				t.Errorf("got limit %d gc %d, want %d and %d", limit, gc, tt.wantLimit, tt.wantGC)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
				t.Errorf("runtime limit %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

func TestApplyMaxProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	tests := []struct {
		name  string
		procs int
		env   map[string]string
		want  int
	}{
		{name: "from the file", procs: 1, want: 1},
		{name: "all", procs: 0, want: runtime.NumCPU()},
		{name: "environment wins", procs: 1, env: map[string]string{"GOMAXPROCS": "3"}, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runtime.GOMAXPROCS(3) // what the runtime would have read from the environment
			cfg := runner.DefaultAgentConfig()
			cfg.MaxProcs = tt.procs
			if got := applyMaxProcs(cfg, func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// TestMain keeps the agents that tests run in this process from changing
// the test binary's GOMAXPROCS (max_procs defaults to 1): the environment
// wins over the agent file.
func TestMain(m *testing.M) {
	if os.Getenv("GOMAXPROCS") == "" {
		os.Setenv("GOMAXPROCS", strconv.Itoa(runtime.GOMAXPROCS(0)))
	}
	os.Exit(m.Run())
}

// TestBurstReleaser feeds the releaser allocation counts: it releases once
// at the first quiet interval after a busy one, never during a burst, never
// twice for one burst, and never under a steady quiet load.
func TestBurstReleaser(t *testing.T) {
	var allocs uint64
	released := 0
	r := &burstReleaser{read: func() uint64 { return allocs }, free: func() { released++ }, log: slog.New(slog.DiscardHandler)}
	steps := []struct {
		name     string
		alloc    uint64 // allocated during the interval before the check
		released int    // releases so far
	}{
		{"start", 0, 0},
		{"idle", 10 << 10, 0},
		{"steady quiet load", quietBytes - 1, 0},
		{"burst", 200 << 20, 0},
		{"burst goes on", 100 << 20, 0},
		{"quiet again: released", 1 << 20, 1},
		{"still quiet", 1 << 20, 1},
		{"another burst", 50 << 20, 1},
		{"over", 0, 2},
	}
	for _, s := range steps {
		allocs += s.alloc
		r.check()
		if released != s.released {
			t.Fatalf("%s: %d releases, want %d", s.name, released, s.released)
		}
	}
}

// TestBurstReleaserSleepsWhenIdle: without collections the releaser looks
// once and then sleeps (an idle hour on the bubble's clock: no check); a
// collection starts the checks, a burst keeps them going, and the first
// quiet interval releases and ends them.
func TestBurstReleaserSleepsWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var allocs atomic.Uint64
		var reads, released atomic.Int32
		r := &burstReleaser{
			read: func() uint64 { reads.Add(1); return allocs.Load() },
			free: func() { released.Add(1) },
			log:  slog.New(slog.DiscardHandler),
		}
		ctx, cancel := context.WithCancel(t.Context())
		gcs := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() { r.run(ctx, 5*time.Second, gcs); close(done) }()
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := reads.Load(); got != 1 {
			t.Fatalf("an idle hour: %d reads of the allocation counter, want 1 (the first look)", got)
		}
		gcs <- struct{}{} // a burst begins: the runtime collects
		synctest.Wait()
		allocs.Add(200 << 20)
		time.Sleep(5 * time.Second) // busy interval
		synctest.Wait()
		if released.Load() != 0 {
			t.Fatal("released during the burst")
		}
		time.Sleep(5 * time.Second) // quiet interval: released
		synctest.Wait()
		if got := released.Load(); got != 1 {
			t.Fatalf("after the burst: %d releases, want 1", got)
		}
		before := reads.Load()
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := reads.Load() - before; got != 0 {
			t.Fatalf("an idle hour after the burst: %d reads, want 0", got)
		}
		cancel()
		<-done
	})
}

// TestNotifyGCs: every collection is signalled, until ctx ends.
func TestNotifyGCs(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	gcs := make(chan struct{}, 1)
	notifyGCs(ctx, gcs)
	for i := range 3 {
		runtime.GC()
		select {
		case <-gcs:
		case <-time.After(10 * time.Second):
			t.Fatalf("collection %d: no signal", i)
		}
	}
}

// TestRereleasePagesAtCollections: the pages are released again only at a
// collection, and at most once per interval; no collection, no wake-up.
// (The resident size is unknown here: every look releases.)
func TestRereleasePagesAtCollections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		gcs := make(chan struct{})
		var released atomic.Int32
		done := make(chan struct{})
		go func() {
			rereleasePages(ctx, 30*time.Second, gcs, func() { released.Add(1) }, func() int64 { return -1 })
			close(done)
		}()
		time.Sleep(time.Hour) // no collection: nothing
		synctest.Wait()
		if got := released.Load(); got != 0 {
			t.Fatalf("an hour without collections: %d releases, want 0", got)
		}
		gcs <- struct{}{}
		gcs <- struct{}{} // the same interval: one release
		synctest.Wait()
		if got := released.Load(); got != 1 {
			t.Fatalf("two collections: %d releases, want 1", got)
		}
		time.Sleep(30 * time.Second)
		gcs <- struct{}{}
		synctest.Wait()
		if got := released.Load(); got != 2 {
			t.Fatalf("a collection an interval later: %d releases, want 2", got)
		}
		cancel()
		<-done
	})
}

// TestRereleasePagesOnlyWhenCodeGrew: a steady agent, whose resident code
// stays what it keeps running, is not released again at every interval
// (which made it fault its working set back in each time); once more code
// is resident (a rare path ran), the next look releases it, and the look
// after that learns the working set anew.
func TestRereleasePagesOnlyWhenCodeGrew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		gcs := make(chan struct{})
		var released, resident atomic.Int64
		resident.Store(5 << 20)
		done := make(chan struct{})
		go func() {
			rereleasePages(ctx, 30*time.Second, gcs, func() { released.Add(1); resident.Store(0) }, resident.Load)
			close(done)
		}()
		look := func() {
			time.Sleep(30 * time.Second)
			gcs <- struct{}{}
			synctest.Wait()
		}
		look() // learns 5 MiB
		for i := range 10 {
			resident.Add(100 << 10) // drift, well under 1 MiB in all
			if i%2 == 0 {
				resident.Add(-100 << 10)
			}
			look()
		}
		if got := released.Load(); got != 0 {
			t.Fatalf("steady resident code: %d releases in 11 intervals, want 0", got)
		}
		resident.Add(2 << 20) // an outage's code
		look()
		if got := released.Load(); got != 1 {
			t.Fatalf("2 MiB more resident: %d releases, want 1", got)
		}
		resident.Store(4 << 20) // the working set back
		look()                  // learns it
		resident.Add(512 << 10)
		look()
		if got := released.Load(); got != 1 {
			t.Fatalf("512 KiB over the working set learnt after the release: %d releases, want still 1", got)
		}
		resident.Add(1 << 20)
		look()
		if got := released.Load(); got != 2 {
			t.Fatalf("1.5 MiB over it: %d releases, want 2", got)
		}
		cancel()
		<-done
	})
}
