package supervisor

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// BenchmarkReloadLatency measures a reload from the save (a write to a
// temporary file and a rename, as editors do) to the new generation running,
// for a pipeline with at least 10k records in flight: appended to its log (or,
// with a window, to its outbox) and not delivered, because its destination
// is down. The debounce is the default 200ms and is part of the figure.
// Budget: 1s. The "stateful" pipeline's window keeps its state over every
// reload (only the map before it changes), so each reload also checkpoints.
func BenchmarkReloadLatency(b *testing.B) {
	for _, bc := range []struct{ name, window string }{
		{"stateless", ""},
		{"stateful", "  - window: {type: count, count: 1, aggregates: [{fn: count}]}\n"},
	} {
		b.Run(bc.name, func(b *testing.B) { benchReload(b, bc.window) })
	}
}

func benchReload(b *testing.B, window string) {
	// On the CPUs the agent runs its code on by default (max_procs), as
	// `pspf-edge run` sets them.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(runner.DefaultMaxProcs))
	rec := newRecorder()
	rec.down.Store(true)
	reg := testRegistry(map[string]*recorder{"a": rec})
	body := func(i int) string {
		return fmt.Sprintf("sources:\n  - simulate: {sensors: 4, rate: 2500, format: fields, shape: steady, max_unacked: 64}\noperators:\n  - map: {set: {cfg: \"%d\"}}\n%ssinks:\n  - record: {id: a}\n    retry: {initial: 100ms, max: 1s}\n", i, window)
	}
	h := startHarness(b, reg, map[string]string{"a.yaml": body(0)}, func(d *Deps) {
		d.Config.ReloadDebounce = 200 * time.Millisecond
		d.Config.ShutdownTimeout = time.Second
	})
	defer h.stop()
	h.waitFor("10k records in flight", func() bool { return h.view("a").BacklogRecords >= 10_000 })
	var worst time.Duration
	var inFlight uint64
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		gen := h.view("a").Generation + 1
		inFlight = max(inFlight, h.view("a").BacklogRecords)
		t0 := time.Now()
		saveTempRename(b, h.dir, "a.yaml", body(i), i)
		for {
			v := h.view("a")
			if v.Generation == gen && v.State == StateRunning {
				break
			}
			time.Sleep(time.Millisecond)
		}
		worst = max(worst, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/reload")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
	b.ReportMetric(float64(inFlight), "in-flight")
	if worst > time.Second {
		b.Errorf("worst reload took %v with %d records in flight, budget 1s", worst, inFlight)
	}
	if strings.Contains(h.logs.String(), "its state is dropped") {
		b.Errorf("a reload that changed only the map dropped the window's state")
	}
}
