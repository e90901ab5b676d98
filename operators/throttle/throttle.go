// Package throttle is the throttle operator: a token bucket per key that
// lets at most rate records per period through, with bursts up to burst.
//
// The bucket is refilled by the records' event times (receive time without
// one), not by the clock of the machine, so that a replay after a crash lets
// the same records through. Buckets are kept in the operator's state table
// and checkpointed with the log position.
package throttle

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the throttle operator's config.
type Config struct {
	// Rate is how many records per Per may pass, per key.
	Rate float64 `yaml:"rate" min:">0" doc:"records let through per period, per key"`
	// Per is the period of Rate.
	Per time.Duration `yaml:"per" min:">0" doc:"the period of rate"`
	// Burst is how many records may pass at once after a quiet spell.
	Burst int `yaml:"burst" min:"1" doc:"most records let through at once after a quiet spell; default 1"`
}

// DefaultConfig returns the defaults: one record per second per key.
func DefaultConfig() *Config { return &Config{Rate: 1, Per: time.Second, Burst: 1} }

// Validate checks the config beyond its fields' tags: an infinite rate
// would let everything through, which is no throttle.
func (c *Config) Validate(n agent.Node) {
	if math.IsInf(c.Rate, 0) {
		n.Field("rate").Errorf("must be finite, got %q", n.Field("rate").Text())
	}
}

// Factory returns the throttle operator's factory (stateful).
func Factory() agent.Factory[agent.Operator] {
	f := agent.Typed("per-key rate limit (token bucket on event time)", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
	f.Stateful = true
	return f
}

// Throttle is the throttle operator.
type Throttle struct {
	perNano   float64 // tokens per nanosecond
	burst     float64
	table     agent.StateTable
	throttled *agent.Counter
	buf       []byte
}

// New returns the throttle operator for c.
func New(c *Config, env agent.Env) (*Throttle, error) {
	t, err := agent.StateTableOf(env, 0)
	if err != nil {
		return nil, fmt.Errorf("throttle: state table: %w", err)
	}
	return &Throttle{perNano: c.Rate / float64(c.Per), burst: float64(max(c.Burst, 1)), table: t,
		throttled: env.Counter("pspf_dropped_total", "reason", "throttled")}, nil
}

// Process keeps the records their key's bucket has a token for.
func (th *Throttle) Process(_ context.Context, b *agent.Batch) error {
	throttled, err := b.KeepOrFail(th.allow)
	th.throttled.Add(throttled)
	return err
}

func (th *Throttle) allow(r *agent.Record) (bool, error) {
	key := []byte(r.Key)
	t := r.Time().UnixNano()
	v, found, err := th.table.Get(key, th.buf[:0])
	if err != nil {
		return false, fmt.Errorf("throttle: %w", err)
	}
	th.buf = v
	tokens, last := th.burst, t
	if found && len(v) == 16 {
		tokens = math.Float64frombits(binary.LittleEndian.Uint64(v))
		last = int64(binary.LittleEndian.Uint64(v[8:]))
		if t > last {
			tokens = math.Min(th.burst, tokens+float64(t-last)*th.perNano)
			last = t
		}
	}
	ok := tokens >= 1
	if ok {
		tokens--
	}
	th.buf = binary.LittleEndian.AppendUint64(th.buf[:0], math.Float64bits(tokens))
	th.buf = binary.LittleEndian.AppendUint64(th.buf, uint64(last))
	if err := th.table.Put(key, th.buf); err != nil {
		return false, fmt.Errorf("throttle: %w", err)
	}
	return ok, nil
}
