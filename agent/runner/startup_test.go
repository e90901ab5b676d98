package runner_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// connectSink's Connect returns what fail says for each attempt (1, 2, ...).
type connectSink struct {
	agenttest.RecordingSink
	attempts atomic.Int64
	fail     func(attempt int64) error
}

func (s *connectSink) Connect(context.Context) error { return s.fail(s.attempts.Add(1)) }

// TestStartedTellsSetupErrorsFromOutages: Started closes once every
// component has connected, or at a setup error (agent.Permanent) before
// that; an outage, however long, leaves it open.
func TestStartedTellsSetupErrorsFromOutages(t *testing.T) {
	outage := errors.New("dial: connection refused")
	tests := []struct {
		name     string
		fail     func(int64) error
		started  bool
		setupErr string
	}{
		{"connects after an outage", func(n int64) error {
			if n < 3 {
				return outage
			}
			return nil
		}, true, ""},
		{"setup error", func(int64) error { return agent.Permanent(errors.New("tls ca_file: gone")) }, true, "tls ca_file: gone"},
		{"setup error after an outage", func(n int64) error {
			if n < 3 {
				return outage
			}
			return agent.Permanent(errors.New("bad credentials"))
		}, true, "bad credentials"},
		{"outage", func(int64) error { return outage }, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &connectSink{fail: tt.fail}
			reg := harness(agenttest.NewScriptSource(batchOf(0, 3)), agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink)
			spec, err := reg.ParsePipeline("p.yaml", []byte(oneOfEach), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
			if err != nil {
				t.Fatal(err)
			}
			p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open(), ShutdownTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() { p.SetStop(runner.StopOptions{KeepBacklog: true}); cancel(); <-done }()
			if tt.started {
				select {
				case <-p.Started():
				case <-time.After(10 * time.Second):
					t.Fatalf("Started not closed after %d connect attempts", sink.attempts.Load())
				}
				err := p.SetupErr()
				if tt.setupErr == "" && err != nil || tt.setupErr != "" && (err == nil || !strings.Contains(err.Error(), tt.setupErr)) {
					t.Errorf("SetupErr: got %v, want %q", err, tt.setupErr)
				}
				return
			}
			agenttest.Eventually(t, 10*time.Second, "5 connect attempts of the sink", func() bool { return sink.attempts.Load() >= 5 }, nil)
			select {
			case <-p.Started():
				t.Errorf("Started closed during an outage (SetupErr %v), want it open", p.SetupErr())
			default:
			}
		})
	}
}
