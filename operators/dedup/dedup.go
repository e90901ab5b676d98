// Package dedup is the dedup operator: it drops a record seen before within
// a TTL, recognised by its ID or by the values of some fields.
//
// A record is a duplicate when a record with the same identity was forwarded
// less than ttl before it, measured on the records' event times (receive time
// without one), so that a replay decides the same way. Identities are kept in
// the operator's state table, checkpointed with the log position; the table
// forgets them gcSlack after ttl on the state clock (garbage collection
// only), which counts the agent's running time and ignores wall-clock jumps,
// so an NTP step never drops an identity early.
package dedup

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the dedup operator's config.
type Config struct {
	// Fields identify a record by their values; empty means by its ID.
	Fields []string `yaml:"fields" doc:"fields whose values identify a record; empty: the record ID"`
	// TTL is how long an identity is remembered.
	TTL time.Duration `yaml:"ttl" min:">0" doc:"how long after a record an identical one counts as a duplicate"`
}

// DefaultConfig returns the defaults: by ID, for ten minutes.
func DefaultConfig() *Config { return &Config{TTL: 10 * time.Minute} }

// Validate checks the config beyond its fields' tags.
func (c *Config) Validate(n agent.Node) {
	for i, f := range c.Fields {
		if f == "" {
			n.Field("fields").Index(i).Errorf("must not be empty")
		}
	}
}

// Factory returns the dedup operator's factory (stateful).
func Factory() agent.Factory[agent.Operator] {
	f := agent.Typed("drops records seen before within a TTL, by ID or by fields", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
	f.Stateful = true
	return f
}

// Dedup is the dedup operator.
type Dedup struct {
	fields []string
	ttl    int64
	table  agent.StateTable
	dups   *agent.Counter
	key    []byte
	val    []byte
}

// gcSlack is how much longer than ttl the table keeps an identity, on the
// state clock: enough for a slow replay.
const gcSlack = time.Hour

// New returns the dedup operator for c.
func New(c *Config, env agent.Env) (*Dedup, error) {
	t, err := agent.StateTableOf(env, c.TTL+gcSlack)
	if err != nil {
		return nil, fmt.Errorf("dedup: state table: %w", err)
	}
	return &Dedup{fields: c.Fields, ttl: int64(c.TTL), table: t,
		dups: env.Counter("pspf_dropped_total", "reason", "duplicate")}, nil
}

// Process drops the duplicates of b, keeping the order of the rest.
func (d *Dedup) Process(_ context.Context, b *agent.Batch) error {
	dups, err := b.KeepOrFail(d.fresh)
	d.dups.Add(dups)
	return err
}

func (d *Dedup) identity(r *agent.Record) []byte {
	k := d.key[:0]
	if len(d.fields) == 0 {
		return append(append(k, 'i'), r.ID...)
	}
	k = append(k, 'f')
	for _, name := range d.fields {
		if f := r.Field(name); f != nil {
			k = append(k, byte(f.Kind))
			k = f.AppendText(k)
		}
		k = append(k, 0)
	}
	return k
}

// fresh reports whether r's identity was not seen within the TTL, and
// remembers it then.
func (d *Dedup) fresh(r *agent.Record) (bool, error) {
	d.key = d.identity(r)
	t := r.Time().UnixNano()
	old, ok, err := d.table.Get(d.key, d.val[:0])
	if err != nil {
		return false, fmt.Errorf("dedup: %w", err)
	}
	d.val = old
	if ok && len(old) == 8 {
		first := int64(binary.LittleEndian.Uint64(old))
		if t-first < d.ttl && t >= first {
			return false, nil
		}
	}
	d.val = binary.LittleEndian.AppendUint64(d.val[:0], uint64(t))
	if err := d.table.Put(d.key, d.val); err != nil {
		return false, fmt.Errorf("dedup: %w", err)
	}
	return true, nil
}
