package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// healthSink fails its first writes, then, in the next one, reports the
// destination unreachable through Env.Unreachable and waits for release
// before it succeeds.
type healthSink struct {
	env     agent.Env
	fails   int
	release chan struct{}

	mu      sync.Mutex
	writes  int
	waiting bool
	got     int
}

func (s *healthSink) Connect(context.Context) error { return nil }
func (s *healthSink) Close(context.Context) error   { return nil }

func (s *healthSink) Write(ctx context.Context, recs []agent.Record) error {
	s.mu.Lock()
	s.writes++
	n := s.writes
	s.mu.Unlock()
	if n <= s.fails {
		return fmt.Errorf("uplink down (attempt %d)", n)
	}
	if n == s.fails+1 {
		s.env.Unreachable(errors.New("no answer for 3s"))
		s.mu.Lock()
		s.waiting = true
		s.mu.Unlock()
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	s.got += len(recs)
	s.mu.Unlock()
	return nil
}

func (s *healthSink) isWaiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// TestSinkHealth checks the sink status through an outage: failed writes
// make the sink offline with the last failure as its last error (and the
// pipeline's), logged once; a sink's Unreachable report while a write waits
// does the same without failing the write; the first success clears
// offline_since and both last errors, and logs the end of the outage once.
func TestSinkHealth(t *testing.T) {
	sink := &healthSink{fails: 3, release: make(chan struct{})}
	reg := runner.NewRegistry()
	none := func() *noConfig { return &noConfig{} }
	src := agenttest.NewScriptSource(batchOf(0, 10), batchOf(10, 10))
	reg.Sources["script"] = agent.Typed[agent.Source]("test", none, func(*noConfig, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["rec"] = agent.Typed[agent.Sink]("test", none, func(_ *noConfig, env agent.Env) (agent.Sink, error) {
		if env.Unreachable == nil {
			return nil, errors.New("no Unreachable in a sink's Env")
		}
		sink.env = env
		return sink, nil
	})
	spec, err := reg.ParsePipeline("p.yaml", []byte("sources: [{script: {}}]\nsinks: [{rec: {}, retry: {initial: 5ms, max: 10ms}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logs := &agenttest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open(), Logger: logger, ShutdownTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()

	agenttest.Eventually(t, 20*time.Second, "the sink's waiting write", sink.isWaiting, logs)
	st := p.Status()
	ss := st.Sinks[0]
	if ss.Online || ss.OfflineSince.IsZero() || ss.LastError != "rec: no answer for 3s" || st.LastError != ss.LastError {
		t.Errorf("during the waiting write: got online %v, offline_since %v, last_error %q, pipeline last_error %q; want offline since the first failure, with the report",
			ss.Online, ss.OfflineSince, ss.LastError, st.LastError)
	}
	if ss.Errors != 3 || ss.Retries != 3 {
		t.Errorf("got %d errors, %d retries, want 3 and 3 (the report is not a failed attempt)", ss.Errors, ss.Retries)
	}
	close(sink.release)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	st = p.Status()
	ss = st.Sinks[0]
	if !ss.Online || !ss.OfflineSince.IsZero() || ss.LastError != "" || st.LastError != "" {
		t.Errorf("after delivering: got online %v, offline_since %v, last_error %q, pipeline last_error %q; want online, all cleared",
			ss.Online, ss.OfflineSince, ss.LastError, st.LastError)
	}
	if sink.got != 20 {
		t.Errorf("got %d records delivered, want 20", sink.got)
	}
	if n := strings.Count(logs.String(), "sink offline"); n != 1 {
		t.Errorf("got %d 'sink offline' lines, want 1 for one outage of 4 failures", n)
	}
	if n := strings.Count(logs.String(), "sink online again"); n != 1 {
		t.Errorf("got %d 'sink online again' lines, want 1", n)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("got %d WARN lines, want 1:\n%s", n, logs.String())
	}
}
