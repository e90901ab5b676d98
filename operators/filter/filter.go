// Package filter is the filter operator: it keeps the records for which an
// expression is true and removes the others.
//
// The expression is compiled once, when the pipeline is loaded (see package
// operators/expr for the language). A record for which it is false is removed
// and counted as pspf_dropped_total{reason="filtered"}. A record on which it
// fails (a missing field, a string where a number is needed) is moved to the
// batch's dead-letter list and counted with reason "expr_error".
package filter

import (
	"context"
	"fmt"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/operators/expr"
)

// Config is the filter operator's config.
type Config struct {
	// Expr is the condition a record must meet to be kept.
	Expr string `yaml:"expr" required:"true" doc:"condition a record must meet to be kept, like: temp > -50 && sensor != \"test\""`
}

// DefaultConfig returns the defaults: none; expr must be set.
func DefaultConfig() *Config { return &Config{} }

// Validate compiles the expression so that a bad one is reported at load,
// with its column.
func (c *Config) Validate(n agent.Node) {
	en := n.Field("expr")
	if c.Expr == "" {
		return // the required tag says so
	}
	p, err := expr.Compile(c.Expr)
	if err != nil {
		en.Errorf("invalid expression: %v, got %q", err, en.Text())
		return
	}
	if t := p.Type(); t != expr.TypeUnknown && t != expr.TypeBool {
		en.Errorf("must be a condition (true or false), not a %s, got %q", t, en.Text())
	}
}

// Factory returns the filter operator's factory.
func Factory() agent.Factory[agent.Operator] {
	return agent.Typed("keeps the records for which an expression is true", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
}

// Filter is the filter operator. It is not safe for concurrent use, as the
// runner guarantees.
type Filter struct {
	prog      *expr.Program
	component string
	filtered  *agent.Counter
	failed    *agent.Counter
}

// New compiles the config's expression and returns the operator.
func New(c *Config, env agent.Env) (*Filter, error) {
	p, err := expr.Compile(c.Expr)
	if err != nil {
		return nil, fmt.Errorf("filter: expression %q: %w", c.Expr, err)
	}
	return &Filter{
		prog:      p,
		component: env.Component,
		filtered:  env.Counter("pspf_dropped_total", "reason", "filtered"),
		failed:    env.Counter("pspf_dropped_total", "reason", "expr_error"),
	}, nil
}

// Process removes the records for which the expression is false, keeping the
// order of the others. Records it fails on go to b.Dead.
func (f *Filter) Process(_ context.Context, b *agent.Batch) error {
	filtered, failed := b.Keep(f.component, func(r *agent.Record) (bool, error) {
		ok, err := f.prog.EvalBool(r)
		if err != nil {
			return false, fmt.Errorf("filter: expression %q: %w", f.prog.Source(), err)
		}
		return ok, nil
	})
	if filtered > 0 {
		f.filtered.Add(filtered)
	}
	if failed > 0 {
		f.failed.Add(failed)
	}
	return nil
}
