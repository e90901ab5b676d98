package main

import (
	"runtime"
	"runtime/debug"

	"github.com/pspf/pspf-edge/agent"
)

// applyMemorySettings sets the Go runtime's soft memory limit and garbage
// collection target from the agent file's memory_limit and gc_percent. Each
// is left alone when its environment variable (GOMEMLIMIT, GOGC) is set: the
// runtime has read that already, and an operator's environment wins over the
// file. getenv is os.Getenv outside tests. It returns the settings in force.
func applyMemorySettings(cfg agent.AgentConfig, getenv func(string) string) (limit int64, gcPercent int) {
	if getenv("GOMEMLIMIT") == "" {
		l := int64(cfg.MemoryLimit)
		if l == 0 {
			l = 1<<63 - 1 // the runtime's "no limit"
		}
		debug.SetMemoryLimit(l)
	}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	limit = debug.SetMemoryLimit(-1)
	gcPercent = debug.SetGCPercent(-1)
	debug.SetGCPercent(gcPercent)
	return limit, gcPercent
}

// applyMaxProcs sets how many CPUs run the agent's Go code at once from the
// agent file's max_procs (0: all), unless the GOMAXPROCS environment
// variable is set. It returns the setting in force.
func applyMaxProcs(cfg agent.AgentConfig, getenv func(string) string) int {
	if getenv("GOMAXPROCS") == "" {
		n := cfg.MaxProcs
		if n == 0 {
			n = runtime.NumCPU()
		}
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}
