// Package optest holds the test helpers the operator packages share: an Env
// with its own metrics, and parsing a README's sample config through the
// pipeline parser. It is imported by tests only.
package optest

import (
	"bytes"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Env returns an Env with a fresh metrics set and a discarding logger.
func Env() agent.Env {
	return agent.Env{
		Pipeline:  "test",
		Component: "operators[0]",
		Logger:    slog.New(slog.DiscardHandler),
		Metrics:   agent.NewMetrics(),
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
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	_, rest, ok := bytes.Cut(data, []byte("```yaml\n"))
	if !ok {
		t.Fatalf("%s: no ```yaml block", path)
	}
	body, _, ok := bytes.Cut(rest, []byte("```"))
	if !ok {
		t.Fatalf("%s: unterminated ```yaml block", path)
	}
	return string(body)
}

// Parse parses a pipeline file made of text (its operators: section) plus a
// stub source and sink, with the operator factory registered as typ. Line
// numbers in errors are those of text.
func Parse(text, typ string, f agent.Factory[agent.Operator]) (*agent.PipelineSpec, error) {
	r := agent.NewRegistry()
	stub := func() any { return &struct{}{} }
	r.Sources["in"] = agent.Factory[agent.Source]{Config: stub}
	r.Sinks["out"] = agent.Factory[agent.Sink]{Config: stub}
	r.Operators[typ] = f
	return r.ParsePipeline("test.yaml", []byte(text+"\nsources:\n  - in: {}\nsinks:\n  - out: {}\n"), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
}

// Build parses text as Parse does and builds every operator in it.
func Build(t testing.TB, text, typ string, f agent.Factory[agent.Operator], env agent.Env) []agent.Operator {
	t.Helper()
	spec, err := Parse(text, typ, f)
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
