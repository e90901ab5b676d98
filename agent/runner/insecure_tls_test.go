package runner_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

type tlsSinkConfig struct {
	URL string          `yaml:"url"`
	TLS agent.TLSConfig `yaml:"tls"`
}

// TestInsecureTLSWarnsOnceAtStart: a tls block with insecure_skip_verify
// gets one WARN when the pipeline is built, naming the component and the
// setting's place; a block that verifies gets none, and running the
// pipeline adds none.
func TestInsecureTLSWarnsOnceAtStart(t *testing.T) {
	reg := harness(&idleSource{recs: batchOf(0, 2)}, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), nil)
	reg.Sinks["tlsrec"] = agent.Typed[agent.Sink]("test", func() *tlsSinkConfig { return &tlsSinkConfig{} }, func(*tlsSinkConfig, agent.Env) (agent.Sink, error) {
		return &agenttest.RecordingSink{}, nil
	})
	yaml := "sources: [{script: {}}]\nsinks:\n" +
		"  - tlsrec: {url: a, tls: {insecure_skip_verify: true}}\n" +
		"  - tlsrec: {url: b, tls: {server_name: b.example}}\n" +
		"    name: verified\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var logs agenttest.LogBuffer
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), ShutdownTimeout: time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	check := func(when string) {
		t.Helper()
		out := logs.String()
		if n := strings.Count(out, "insecure_skip_verify is on"); n != 1 {
			t.Fatalf("%s: got %d insecure_skip_verify warnings, want 1:\n%s", when, n, out)
		}
		for _, want := range []string{"level=WARN", "pipeline=p", "component=tlsrec", "setting=sinks[0].tlsrec.tls.insecure_skip_verify"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the warning lacks %q:\n%s", when, want, out)
			}
		}
	}
	check("built")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	agenttest.Eventually(t, 10*time.Second, "the first sink's first batch", func() bool { return p.Status().Sinks[0].Records > 0 }, &logs)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	check("run")
}
