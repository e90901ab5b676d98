package runner_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/wait"
)

// idleSource emits one batch, then waits for the end of the run, so the
// pipeline stays up for as long as the test wants.
type idleSource struct {
	sent bool
	recs []agent.Record
}

func (s *idleSource) Connect(context.Context) error { return nil }

func (s *idleSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	if !s.sent {
		s.sent = true
		return s.recs, func(context.Context, error) {}, nil
	}
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

func (s *idleSource) Close(context.Context) error { return nil }

// TestCheckpointIntervalFromPipelineFile runs a windowed pipeline whose file
// sets `checkpoint: {interval: 100ms}` under an agent default of an hour: the
// periodic checkpoints must follow the file.
func TestCheckpointIntervalFromPipelineFile(t *testing.T) {
	sink := &agenttest.RecordingSink{}
	reg := windowRegistry(&idleSource{recs: readings(0, 10)}, sink)
	spec, err := reg.ParsePipeline("w.yaml", []byte(windowPipeline+"checkpoint: {interval: 100ms}\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: t.TempDir(),
		OpenLog: runner.OpenDiskLog(slog.New(slog.DiscardHandler)), ShutdownTimeout: 5 * time.Second, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	ckpts := m.Counter("pspf_checkpoints_total", "pipeline", "w")
	wait.Until(10*time.Second, func() bool { return ckpts.Get() >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := ckpts.Get(); n < 3 {
		t.Errorf("got %d checkpoints in 10s with checkpoint.interval 100ms, want at least 3", n)
	}
}
