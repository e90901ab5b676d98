package runner_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// Under drop_newest, what a full log refuses is dropped for good and
// counted once: the source is acked for it, not asked to send it again (it
// would be refused and counted again, or stored later and delivered while
// counted as dropped). Delivered and dropped partition what was read.
func TestDropNewestDropsAndAcks(t *testing.T) {
	const batches, per = 100, 10
	var in [][]agent.Record
	for b := range batches {
		in = append(in, batchOf(b*per, per))
	}
	src := agenttest.NewScriptSource(in...)
	// The destination is down until every batch was acked once (the log
	// fills meanwhile), then up.
	sink := &agenttest.RecordingSink{Fail: func(int, []agent.Record) error {
		if len(src.AckErrors()) < batches {
			return errors.New("destination down")
		}
		return nil
	}}
	reg := harness(src, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink)
	buf := runner.DefaultBufferConfig()
	buf.MaxBytes, buf.SegmentBytes, buf.Overflow = 16<<10, 4<<10, "drop_newest"
	spec, err := reg.ParsePipeline("p.yaml", []byte(oneOfEach), runner.Defaults{Buffer: buf})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: runner.NewMetrics(), Logger: logger,
		DataDir: t.TempDir(), OpenLog: runner.OpenDiskLog(logger), ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}

	delivered := map[int64]int{}
	for _, r := range sink.Records() {
		delivered[r.Fields[0].Int]++
	}
	for n, c := range delivered {
		if c != 1 {
			t.Errorf("record %d delivered %d times, want once", n, c)
		}
	}
	st := p.Status()
	dropped := st.Log.Drops["overflow_newest"]
	if dropped == 0 {
		t.Fatal("nothing dropped: the log never filled")
	}
	if got := uint64(len(delivered)) + dropped; got != batches*per {
		t.Errorf("delivered %d + dropped %d = %d, want %d: dropped records were delivered after all", len(delivered), dropped, got, batches*per)
	}
	for i, a := range src.AckErrors() {
		if a != nil {
			t.Errorf("ack %d: got %v, want nil (a refused batch is dropped, not redelivered)", i, a)
		}
	}
}
