package main

import (
	"runtime/debug"
	"testing"

	"github.com/pspf/pspf-edge/agent"
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
			cfg := agent.DefaultAgentConfig()
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
