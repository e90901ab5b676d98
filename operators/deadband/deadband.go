// Package deadband is the deadband operator: per key, it forwards a reading
// only when its value has moved by more than a threshold since the last one
// forwarded, or when the heartbeat has passed since then, so that a quiet
// sensor is never mistaken for a dead one.
//
// Time is the record's event time (its receive time without one), so a replay
// after a crash forwards the same readings. The last forwarded value and time
// of each key are kept in the operator's state table and checkpointed.
package deadband

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the deadband operator's config.
type Config struct {
	// Field is the numeric field watched.
	Field string `yaml:"field" required:"true" doc:"numeric field whose changes matter"`
	// Threshold is how far the value must move from the last forwarded one.
	Threshold float64 `yaml:"threshold" min:"0" doc:"forward when the value moves by more than this from the last forwarded value"`
	// Percent makes Threshold relative: a percentage of the last forwarded value.
	Percent bool `yaml:"percent" doc:"threshold is a percentage of the last forwarded value"`
	// Heartbeat forwards a reading anyway when this long has passed since the last one forwarded.
	Heartbeat time.Duration `yaml:"heartbeat" min:"0" doc:"forward a reading anyway once this long has passed since the last forwarded one; 0: never"`
}

// DefaultConfig returns the defaults: no heartbeat.
func DefaultConfig() *Config { return &Config{} }

// Factory returns the deadband operator's factory (stateful).
func Factory() agent.Factory[agent.Operator] {
	f := agent.Typed("forwards a reading when it moves by more than a threshold, or at each heartbeat", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
	f.Stateful = true
	return f
}

// Deadband is the deadband operator.
type Deadband struct {
	cfg        Config
	component  string
	table      agent.StateTable
	suppressed *agent.Counter
	buf        []byte
}

// New returns the deadband operator for c.
func New(c *Config, env agent.Env) (*Deadband, error) {
	t, err := agent.StateTableOf(env, 0)
	if err != nil {
		return nil, fmt.Errorf("deadband: state table: %w", err)
	}
	return &Deadband{cfg: *c, component: env.Component, table: t,
		suppressed: env.Counter("pspf_dropped_total", "reason", "deadband")}, nil
}

// Process keeps the records that moved enough or are due for a heartbeat.
// A record without a numeric field is forwarded: there is nothing to compare.
func (d *Deadband) Process(_ context.Context, b *agent.Batch) error {
	suppressed, err := b.KeepOrFail(d.keep)
	d.suppressed.Add(suppressed)
	return err
}

func (d *Deadband) keep(r *agent.Record) (bool, error) {
	f := r.Field(d.cfg.Field)
	if f == nil {
		return true, nil
	}
	v, ok := f.AsFloat()
	if !ok {
		return true, nil
	}
	t := r.Time().UnixNano()
	key := []byte(r.Key)
	old, found, err := d.table.Get(key, d.buf[:0])
	if err != nil {
		return false, fmt.Errorf("deadband: %w", err)
	}
	d.buf = old
	if found && len(old) == 16 {
		last := math.Float64frombits(binary.LittleEndian.Uint64(old))
		lastT := int64(binary.LittleEndian.Uint64(old[8:]))
		limit := d.cfg.Threshold
		if d.cfg.Percent {
			limit = math.Abs(last) * d.cfg.Threshold / 100
		}
		beat := d.cfg.Heartbeat > 0 && t-lastT >= int64(d.cfg.Heartbeat)
		if math.Abs(v-last) <= limit && !beat {
			return false, nil
		}
	}
	d.buf = binary.LittleEndian.AppendUint64(d.buf[:0], math.Float64bits(v))
	d.buf = binary.LittleEndian.AppendUint64(d.buf, uint64(t))
	if err := d.table.Put(key, d.buf); err != nil {
		return false, fmt.Errorf("deadband: %w", err)
	}
	return true, nil
}
