package main

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// applyMemorySettings sets the Go runtime's soft memory limit and garbage
// collection target from the agent file's memory_limit and gc_percent. Each
// is left alone when its environment variable (GOMEMLIMIT, GOGC) is set: the
// runtime has read that already, and an operator's environment wins over the
// file. getenv is os.Getenv outside tests. It returns the settings in force.
func applyMemorySettings(cfg runner.AgentConfig, getenv func(string) string) (limit int64, gcPercent int) {
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
func applyMaxProcs(cfg runner.AgentConfig, getenv func(string) string) int {
	if getenv("GOMAXPROCS") == "" {
		n := cfg.MaxProcs
		if n == 0 {
			n = runtime.NumCPU()
		}
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}

// burstCheckInterval is how often the agent looks for memory a burst left
// behind (see burstReleaser).
const burstCheckInterval = 5 * time.Second

// burstReleaser gives back to the system the memory a burst left behind,
// once the agent is quiet again. The collector runs only as the heap grows,
// and the runtime keeps freed pages for reuse up to its heap goal, which a
// burst raised; the code the burst ran stays resident too. After a flood of
// large payloads an idle agent otherwise kept 10-15 MB more resident than
// before it, for as long as it stayed idle. Each check reads the runtime's
// metrics (no stop of the world): an interval in which the agent allocated
// quietBytes or more is busy; the first quiet one after a busy one ends the
// burst, and free runs once (two collections, the second of which frees
// what the pipelines' buffer pools held, and the release of every free
// page: a few milliseconds for the agent's heap; and the executable's
// pages). A steady load, busy or quiet, releases nothing.
type burstReleaser struct {
	read      func() uint64 // bytes allocated since the start; heapAllocs outside tests
	free      func()
	log       *slog.Logger
	lastAlloc uint64
	started   bool
	busy      bool // the last interval was busy
}

// quietBytes is what the agent may allocate in one check interval and
// still count as quiet: idle, it allocates a few KB per second; a burst of
// large payloads, tens of MB (three copies of every payload on its way).
const quietBytes = 8 << 20

// check looks once; it reports whether it released.
func (r *burstReleaser) check() bool {
	allocs := r.read()
	allocated := allocs - r.lastAlloc
	r.lastAlloc = allocs
	if !r.started {
		r.started = true
		return false
	}
	if allocated >= quietBytes {
		r.busy = true
		return false
	}
	if !r.busy {
		return false
	}
	r.busy = false
	r.free()
	r.log.Debug("burst over: its memory given back to the system")
	// The collection's own allocations are not load.
	r.lastAlloc = r.read()
	return true
}

// run checks every interval while the agent allocates, and otherwise
// sleeps until the next garbage collection: a burst makes the runtime
// collect, an idle agent does not (the runtime forces one every two
// minutes), so an idle agent does not wake for the checks. A collection
// starts a measured interval; each busy one is followed by another; the
// first quiet one ends it (releasing after a burst). gcs receives a value
// after collections (notifyGCs).
func (r *burstReleaser) run(ctx context.Context, interval time.Duration, gcs <-chan struct{}) {
	t := time.NewTimer(interval)
	defer t.Stop()
	armed := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-gcs:
			if !armed {
				r.lastAlloc, r.started = r.read(), true
				t.Reset(interval)
				armed = true
			}
			continue
		case <-t.C:
		}
		r.check()
		if r.busy {
			t.Reset(interval)
		} else {
			armed = false
		}
	}
}

// notifyGCs sends on each of cs after each garbage collection until ctx
// ends (a send that would block is dropped: they are signals). A small
// object is left unreachable with a cleanup; the collection that frees it
// runs the cleanup, which sends and leaves the next one.
func notifyGCs(ctx context.Context, cs ...chan<- struct{}) {
	type sentinel struct{ _ [64]byte } // not the tiny allocator's: freed alone
	var arm func()
	arm = func() {
		runtime.AddCleanup(new(sentinel), func(struct{}) {
			if ctx.Err() != nil {
				return
			}
			// Armed before the signal: whoever gets it and collects again
			// is signalled again (armed after, a collection could come
			// between the two and pass unseen).
			arm()
			for _, c := range cs {
				select {
				case c <- struct{}{}:
				default:
				}
			}
		}, struct{}{})
	}
	arm()
}

// heapAllocs returns the bytes the runtime has allocated since the start
// (runtime/metrics, without stopping the world).
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// rereleasePages releases the executable's pages again, at a collection,
// when the code resident has grown: code run once in a while (a Kafka
// outage's retries, a reload) otherwise accumulates. It looks at the first
// collection at least every after its last look: the first look after a
// release learns what the agent keeps running (resident returns the
// executable's resident bytes, -1 if unknown), and a later one releases
// once that has grown by rereleaseGrowth. A steady agent is thus not made
// to fault its working set back in every interval (a few hundred faults,
// some of them reads from the disk, and the release's own walk of the
// mappings, each time: 3-4 % of its CPU at 100 records/s); with resident
// unknown it releases at every look, as before. It waits for collections,
// not on a timer: an idle agent, whose code does not change, is not woken
// for it (the runtime's forced collection every two minutes is its only
// occasion then).
func rereleasePages(ctx context.Context, every time.Duration, gcs <-chan struct{}, release func(), resident func() int64) {
	last := time.Now()
	base := int64(-1) // resident bytes after the last release, once looked at
	for {
		select {
		case <-ctx.Done():
			return
		case <-gcs:
		}
		if time.Since(last) < every {
			continue
		}
		last = time.Now()
		r := resident()
		switch {
		case r >= 0 && base < 0:
			base = r
		case r >= 0 && r < base+rereleaseGrowth:
			base = min(base, r)
		default:
			release()
			base = -1
		}
	}
}

// rereleaseGrowth is how much more of the executable must be resident than
// after the last release for the next look to release it again: code of a
// rare path (an outage's retries and the drain kept about 2 MB more), not
// the working set's page-by-page drift.
const rereleaseGrowth = 1 << 20
