// Package changes is the changes operator: per key, it forwards a record only
// when the values of some fields differ from those of the key's previous
// record — a door contact, a machine state, a setpoint.
//
// The last values of each key are kept in the operator's state table and
// checkpointed with the log position, so a restart neither repeats a change
// nor misses one.
package changes

import (
	"bytes"
	"context"
	"fmt"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the changes operator's config.
type Config struct {
	// Fields are compared with the previous record of the key.
	Fields []string `yaml:"fields" doc:"fields compared with the key's previous record"`
	// EmitFirst forwards the first record of a key.
	EmitFirst bool `yaml:"emit_first" doc:"forward the first record seen for a key"`
}

// DefaultConfig returns the defaults: the first record of a key is forwarded.
func DefaultConfig() *Config { return &Config{EmitFirst: true} }

// Validate checks the config.
func (c *Config) Validate(n agent.Node) {
	if len(c.Fields) == 0 {
		n.Field("fields").Errorf("must list at least one field")
	}
	for i, f := range c.Fields {
		if f == "" {
			n.Field("fields").Index(i).Errorf("must not be empty")
		}
	}
}

// Factory returns the changes operator's factory (stateful).
func Factory() agent.Factory[agent.Operator] {
	f := agent.Typed("forwards a record when fields change from the key's previous record", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
	f.Stateful = true
	return f
}

// Changes is the changes operator.
type Changes struct {
	fields    []string
	first     bool
	table     agent.StateTable
	unchanged *agent.Counter
	cur, old  []byte
}

// New returns the changes operator for c.
func New(c *Config, env agent.Env) (*Changes, error) {
	t, err := agent.StateTableOf(env, 0)
	if err != nil {
		return nil, fmt.Errorf("changes: state table: %w", err)
	}
	return &Changes{fields: c.Fields, first: c.EmitFirst, table: t,
		unchanged: env.Counter("pspf_dropped_total", "reason", "unchanged")}, nil
}

// Process keeps the records whose fields changed.
func (c *Changes) Process(_ context.Context, b *agent.Batch) error {
	unchanged, err := b.KeepOrFail(c.changed)
	c.unchanged.Add(unchanged)
	return err
}

func (c *Changes) changed(r *agent.Record) (bool, error) {
	cur := c.cur[:0]
	for _, name := range c.fields {
		if f := r.Field(name); f != nil {
			cur = append(cur, byte(f.Kind))
			cur = f.AppendText(cur)
		}
		cur = append(cur, 0)
	}
	c.cur = cur
	key := []byte(r.Key)
	old, found, err := c.table.Get(key, c.old[:0])
	if err != nil {
		return false, fmt.Errorf("changes: %w", err)
	}
	c.old = old
	if found && bytes.Equal(old, cur) {
		return false, nil
	}
	if err := c.table.Put(key, cur); err != nil {
		return false, fmt.Errorf("changes: %w", err)
	}
	return found || c.first, nil
}
