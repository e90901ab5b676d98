package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/dedup"
	"github.com/pspf/pspf-edge/operators/window"
	"github.com/pspf/pspf-edge/state"
)

func windowRegistry(src agent.Source, sink agent.Sink) *runner.Registry {
	reg := harness(src, nil, sink)
	reg.Operators["window"] = window.Factory()
	return reg
}

const windowPipeline = `
sources: [{script: {}}]
operators:
  - window: {type: tumbling, size: 1s, aggregates: [{fn: sum, field: v}, {fn: count}]}
sinks: [{rec: {}, retry: {initial: 1ms, max: 5ms}}]
`

func readings(from, n int) []agent.Record {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	out := make([]agent.Record, n)
	for i := range out {
		k := from + i
		out[i] = agent.Record{Key: fmt.Sprintf("s%d", k%3), EventTime: base + int64(k)*int64(100*time.Millisecond), Fields: []agent.Field{agent.Float("v", float64(k))}}
	}
	return out
}

func runStateful(t *testing.T, dir string, batches ...[]agent.Record) []agent.Record {
	t.Helper()
	sink := &agenttest.RecordingSink{}
	runStatefulIn(t, dir, windowRegistry(agenttest.NewScriptSource(batches...), sink), windowPipeline)
	return sink.Records()
}

// runStatefulIn runs the pipeline text of reg over the data dir dir until
// its source ends, checkpointing every 20ms.
func runStatefulIn(t *testing.T, dir string, reg *runner.Registry, text string) {
	t.Helper()
	spec, err := reg.ParsePipeline("w.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: dir, OpenLog: runner.OpenDiskLog(slog.New(slog.DiscardHandler)),
		ShutdownTimeout: 5 * time.Second, CheckpointInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestStatefulPipelineRestarts runs a windowed pipeline in two runs over one
// data dir: the windows open at the end of the first run are closed by the
// second, from the checkpointed state, and every window is emitted once.
func TestStatefulPipelineRestarts(t *testing.T) {
	dir := t.TempDir()
	first := runStateful(t, dir, readings(0, 25))
	second := runStateful(t, dir, readings(25, 15))
	var ids []string
	sums := map[string]float64{}
	for _, r := range append(first, second...) {
		ids = append(ids, r.ID)
		sums[r.ID] = r.Field("v_sum").Float
	}
	// 4 seconds of 10 readings each, 3 keys: windows 0..2 are closed by the
	// watermark of second 3, and window 3 stays open.
	if len(ids) != 9 {
		t.Fatalf("got %d outputs %v, want 9", len(ids), ids)
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != 9 {
		t.Errorf("duplicate outputs: %v", ids)
	}
	// Window 1 (readings 10..19) of key s0: 12, 15, 18.
	id := fmt.Sprintf("w:window:s0:%d", time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC).UnixNano())
	if got := sums[id]; got != 45 {
		t.Errorf("sum of %s: got %v, want 45 (outputs %v)", id, got, sums)
	}
	// Window 2 of s0 spans both runs: 21 and 24 in the first, 27 in the second.
	id = fmt.Sprintf("w:window:s0:%d", time.Date(2024, 1, 1, 0, 0, 2, 0, time.UTC).UnixNano())
	if got := sums[id]; got != 72 {
		t.Errorf("sum of %s: got %v, want 72 (outputs %v)", id, got, sums)
	}
}

// TestConcurrentCheckpoints: Checkpoint is safe to call while Run
// checkpoints on its own (a reload's checkpoint meets the periodic one); the
// race detector watches the cursor ack they share.
func TestConcurrentCheckpoints(t *testing.T) {
	var batches [][]agent.Record
	for i := 0; i < 200; i++ {
		batches = append(batches, readings(i*5, 5))
	}
	sink := &agenttest.RecordingSink{}
	reg := windowRegistry(agenttest.NewScriptSource(batches...), sink)
	spec, err := reg.ParsePipeline("w.yaml", []byte(windowPipeline), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: runner.OpenDiskLog(slog.New(slog.DiscardHandler)),
		ShutdownTimeout: 5 * time.Second, CheckpointInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				// Run closes the state file as it ends.
				if err := p.Checkpoint(ctx); err != nil && !errors.Is(err, state.ErrClosed) {
					t.Errorf("checkpoint: %v", err)
					return
				}
			}
		})
	}
	err = <-runErr
	close(done)
	wg.Wait()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	// 1000 readings of 100 ms, 3 keys: windows 0..98 closed by the last
	// watermark, each emitted once.
	seen := map[string]bool{}
	for _, r := range sink.Records() {
		if seen[r.ID] {
			t.Errorf("output %s emitted twice", r.ID)
		}
		seen[r.ID] = true
	}
	if len(seen) != 99*3 {
		t.Errorf("got %d outputs, want %d", len(seen), 99*3)
	}
}

// TestStatefulWithoutSnapshotOrTimer runs a stateful operator that
// implements neither agent.Snapshotter nor agent.TimerHandler (dedup keeps
// everything in its table and acts on input only) in two runs over one data
// dir: it runs, its state is checkpointed, and the second run drops what
// the first saw.
func TestStatefulWithoutSnapshotOrTimer(t *testing.T) {
	op := dedup.Factory()
	probe, err := op.New(op.Config(), agent.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := probe.(agent.Snapshotter); ok {
		t.Fatal("dedup implements Snapshotter; the test needs an operator without it")
	}
	if _, ok := probe.(agent.TimerHandler); ok {
		t.Fatal("dedup implements TimerHandler; the test needs an operator without it")
	}
	dir := t.TempDir()
	run := func(from, n int) []int64 {
		sink := &agenttest.RecordingSink{}
		reg := harness(agenttest.NewScriptSource(batchOf(from, n)), nil, sink)
		reg.Operators["dedup"] = op
		runStatefulIn(t, dir, reg, "sources: [{script: {}}]\noperators: [{dedup: {fields: [n], ttl: 1h}}]\nsinks: [{rec: {}}]\n")
		var got []int64
		for _, r := range sink.Records() {
			got = append(got, r.Field("n").Int)
		}
		slices.Sort(got)
		return got
	}
	if got, want := run(0, 10), []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(got, want) {
		t.Fatalf("first run: got %v, want %v", got, want)
	}
	if got, want := run(5, 10), []int64{10, 11, 12, 13, 14}; !slices.Equal(got, want) {
		t.Errorf("second run: got %v, want %v (5..9 seen in the first)", got, want)
	}
}
