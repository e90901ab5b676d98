package runner_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// busySink answers each Write with the next of its errors (nil once they
// are used up) and records when each Write came.
type busySink struct {
	errs      []error
	mu        sync.Mutex
	at        []time.Time
	delivered chan struct{}
}

func (s *busySink) Connect(context.Context) error { return nil }
func (s *busySink) Close(context.Context) error   { return nil }
func (s *busySink) Write(_ context.Context, recs []agent.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at = append(s.at, time.Now())
	if n := len(s.at); n <= len(s.errs) {
		return s.errs[n-1]
	}
	if len(s.at) == len(s.errs)+1 {
		close(s.delivered)
	}
	return nil
}

// TestForwardObeysRetryAfter: a destination that says when to come back
// (agent.WithRetryAfter, e.g. HTTP 429 with Retry-After) is written to again
// at that time, not at the sink's backoff; a delay past the cap (15 minutes)
// is cut to the cap. The pipeline runs in a synctest bubble, so the waits are
// exact on its clock.
func TestForwardObeysRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &busySink{delivered: make(chan struct{}), errs: []error{
			agent.WithRetryAfter(errors.New("rec: 429 slow down"), 7*time.Second),
			agent.WithRetryAfter(errors.New("rec: 503 maintenance"), 48*time.Hour),
			errors.New("rec: 500 no hint"),
		}}
		reg := harness(&idleSource{recs: batchOf(0, 3)}, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink)
		spec, err := reg.ParsePipeline("p.yaml", []byte("sources: [{script: {}}]\nsinks: [{rec: {}, retry: {initial: 250ms, max: 250ms}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open(), ShutdownTimeout: time.Second})
		if err != nil {
			t.Fatalf("new pipeline: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		select {
		case <-sink.delivered:
		case err := <-done:
			t.Fatalf("run ended before the batch was delivered: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.at) != 4 {
			t.Fatalf("got %d writes, want 4", len(sink.at))
		}
		for i, want := range []time.Duration{7 * time.Second, 15 * time.Minute} {
			if got := sink.at[i+1].Sub(sink.at[i]); got != want {
				t.Errorf("write %d came %v after write %d, want %v", i+2, got, i+1, want)
			}
		}
		// Without a hint, the backoff's full jitter: at most its 250ms.
		if got := sink.at[3].Sub(sink.at[2]); got > 250*time.Millisecond {
			t.Errorf("write 4 came %v after write 3, want the backoff (at most 250ms)", got)
		}
	})
}
