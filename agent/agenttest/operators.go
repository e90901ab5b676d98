package agenttest

import (
	"log/slog"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// Env returns an Env for a component built outside a pipeline, with a fresh
// metrics registry (so that its counters can be read) and a discarding
// logger.
func Env() agent.Env {
	return agent.Env{
		Pipeline:  "test",
		Component: "operators[0]",
		Logger:    slog.New(slog.DiscardHandler),
		Metrics:   runner.NewMetrics(),
		Now:       time.Now,
	}
}

// Dropped returns the value of pspf_dropped_total for reason in env.
func Dropped(env agent.Env, reason string) uint64 {
	return env.Counter("pspf_dropped_total", "reason", reason).Get()
}

// READMESample returns the body of the first ```yaml block of the file at path.
func READMESample(t testing.TB, path string) string {
	t.Helper()
	return READMESamples(t, path)[0]
}

// ParseOperators parses a pipeline file made of text (its operators:
// section) plus a stub source and sink, with the operator factory registered
// as typ. Line numbers in errors are those of text.
func ParseOperators(text, typ string, f agent.Factory[agent.Operator]) (*runner.PipelineSpec, error) {
	r := runner.NewRegistry()
	stub := func() any { return &struct{}{} }
	r.Sources["in"] = agent.Factory[agent.Source]{Config: stub}
	r.Sinks["out"] = agent.Factory[agent.Sink]{Config: stub}
	r.Operators[typ] = f
	return r.ParsePipeline("test.yaml", []byte(text+"\nsources:\n  - in: {}\nsinks:\n  - out: {}\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
}

// BuildOperators parses text as ParseOperators does and builds every
// operator in it.
func BuildOperators(t testing.TB, text, typ string, f agent.Factory[agent.Operator], env agent.Env) []agent.Operator {
	t.Helper()
	spec, err := ParseOperators(text, typ, f)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var ops []agent.Operator
	for _, c := range spec.Operators {
		op, err := f.New(c.Config, env)
		if err != nil {
			t.Fatalf("%s: new: %v", c.Place, err)
		}
		ops = append(ops, op)
	}
	return ops
}
