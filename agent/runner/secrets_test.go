package runner_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// leakyConfig has a secret, as a connector's password or token.
type leakyConfig struct {
	Token string `yaml:"token" secret:"true"`
	URL   string `yaml:"url"`
}

// leakySink puts its secret in every error it can: Connect fails (and
// reports a background error) until released, then Write refuses every
// batch for good, so that the records go to the dead letters with the
// error as their reason.
type leakySink struct {
	cfg     leakyConfig
	env     agent.Env
	release chan struct{}
}

func (s *leakySink) Connect(ctx context.Context) error {
	s.env.ReportError(fmt.Errorf("background: token %s rejected", s.cfg.Token))
	select {
	case <-s.release:
		return nil
	default:
		return fmt.Errorf("connect %s: bad token %q", s.cfg.URL, s.cfg.Token)
	}
}

func (s *leakySink) Write(_ context.Context, recs []agent.Record) error {
	return agent.Permanent(fmt.Errorf("refused: token %s is not allowed (%s)", s.cfg.Token, s.cfg.URL))
}

func (s *leakySink) Close(context.Context) error { return nil }

// TestSecretsMasked gives a sink a secret token and a URL with a password,
// has every error path carry both, and finds neither in the log lines, the
// pipeline's and the sink's last_error, nor the dead-letter reasons.
func TestSecretsMasked(t *testing.T) {
	const token, password = "tok-3f9a1c", "pw-77d2e0"
	sink := &leakySink{release: make(chan struct{})}
	reg := runner.NewRegistry()
	src := agenttest.NewScriptSource(batchOf(0, 5))
	reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *noConfig { return &noConfig{} }, func(*noConfig, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["leaky"] = agent.Typed[agent.Sink]("test", func() *leakyConfig { return &leakyConfig{} }, func(c *leakyConfig, env agent.Env) (agent.Sink, error) {
		sink.cfg, sink.env = *c, env
		return sink, nil
	})
	yaml := "sources: [{script: {}}]\nsinks: [{leaky: {token: " + token + ", url: \"tcp://user:" + password + "@h:1\"}, retry: {initial: 5ms, max: 10ms}}]\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logs := &agenttest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	open := agenttest.Open()
	dir := t.TempDir()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: dir, OpenLog: open, Logger: logger, ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	var texts []string
	check := func(where, text string) {
		t.Helper()
		texts = append(texts, text)
		for _, s := range []string{token, password} {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the secret %q: %s", where, s, text)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	agenttest.Eventually(t, 10*time.Second, "the sink offline with its connect error", func() bool {
		return strings.Contains(p.Status().Sinks[0].LastError, "bad token")
	}, logs)
	st := p.Status()
	check("sink last_error", st.Sinks[0].LastError)
	check("pipeline last_error", st.LastError)
	close(sink.release)
	agenttest.Eventually(t, 10*time.Second, "5 dead letters", func() bool { return p.Status().DeadLetters == 5 }, logs)
	st = p.Status()
	check("sink last_error after the refusal", st.Sinks[0].LastError)
	check("pipeline last_error after the refusal", st.LastError)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	dl, _ := open(filepath.Join(dir, "dead"), runner.DeadLetterBufferConfig())
	recs, err := dl.(*agenttest.MemLog).Records()
	if err != nil || len(recs) != 5 {
		t.Fatalf("dead letters: got %d, %v; want 5", len(recs), err)
	}
	for _, r := range recs {
		f := r.Field(runner.DeadErrorField)
		if f == nil || !strings.Contains(f.Str, "is not allowed") {
			t.Fatalf("dead letter without its reason: %v", r.Fields)
		}
		check("dead-letter reason", f.Str)
	}
	check("log", logs.String())
	if !strings.Contains(strings.Join(texts, "\n"), agent.Mask) {
		t.Errorf("no text shows the mask %q: the errors never reached the outputs", agent.Mask)
	}
}
