package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"

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
