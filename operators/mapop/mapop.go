// Package mapop is the map operator: it sets fields, the record key and the
// event time from expressions. (The package is not called map, a Go keyword;
// pipelines name the operator `map`.)
//
// Expressions are compiled once, when the pipeline is loaded (see package
// operators/expr for the language). The set entries are evaluated in file
// order, each on the record as the previous ones left it, so that
// `temp_k: temp_c + 273.15` may follow `temp_c: (temp_f - 32) / 1.8`. A record
// on which an expression fails (a missing field, a string where a number is
// needed, a result that is nil, NaN or infinite) goes to the batch's
// dead-letter list, as the earlier entries left it, and is counted as
// pspf_dropped_total{reason="expr_error"}.
package mapop

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/operators/expr"
	"github.com/pspf/pspf-edge/operators/internal/timeunit"
)

// Config is the map operator's config.
type Config struct {
	// Set maps field names to the expressions that compute them.
	Set map[string]string `yaml:"set" doc:"fields to set, as name: expression; evaluated in file order, each seeing the fields set before it"`
	// Key computes the record key; a number is written as text.
	Key string `yaml:"key" doc:"expression whose value becomes the record key, like: site + \"/\" + sensor"`
	// EventTime computes the event time.
	EventTime string `yaml:"event_time" doc:"expression for the event time: a number in time_format units, or an RFC 3339 string"`
	// TimeFormat is the unit of a numeric event time.
	TimeFormat string `yaml:"time_format" enum:"unix_s,unix_ms,unix_us,unix_ns" doc:"unit of a numeric event_time; default unix_ms"`

	// order is the file order of Set's keys, taken by Validate.
	order []string
}

// DefaultConfig returns the defaults: numeric event times in milliseconds.
func DefaultConfig() *Config { return &Config{TimeFormat: "unix_ms"} }

// Validate compiles every expression so that a bad one is reported at load,
// with its column, and records the order of the set entries.
func (c *Config) Validate(n agent.Node) {
	if len(c.Set) == 0 && c.Key == "" && c.EventTime == "" {
		n.Errorf("must have at least one of set, key or event_time")
	}
	sn := n.Field("set")
	c.order = sn.Keys()
	for _, name := range c.order {
		fn := sn.Field(name)
		if name == "" {
			fn.Errorf("field name must not be empty")
			continue
		}
		check(fn, c.Set[name], true)
	}
	if c.Key != "" {
		check(n.Field("key"), c.Key, true)
	}
	if c.EventTime != "" {
		check(n.Field("event_time"), c.EventTime, false)
	}
}

// check compiles src and reports a result type that cannot be used.
func check(n agent.Node, src string, boolOK bool) {
	p, err := expr.Compile(src)
	if err != nil {
		n.Errorf("invalid expression: %v, got %q", err, n.Text())
		return
	}
	if t := p.Type(); t == expr.TypeBool && !boolOK || t == expr.TypeNil {
		n.Errorf("must compute a value, not a %s, got %q", t, n.Text())
	}
}

// Factory returns the map operator's factory.
func Factory() agent.Factory[agent.Operator] {
	return agent.Typed("sets fields, the key and the event time from expressions", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
}

// assignment is one compiled set entry.
type assignment struct {
	name string
	prog *expr.Program
}

// Map is the map operator. It is not safe for concurrent use, as the runner
// guarantees.
type Map struct {
	sets      []assignment
	key       *expr.Program
	eventTime *expr.Program
	unit      int64 // nanoseconds per unit of a numeric event time
	component string
	failed    *agent.Counter
	buf       []byte
}

// New compiles the config's expressions and returns the operator.
func New(c *Config, env agent.Env) (*Map, error) {
	m := &Map{component: env.Component, failed: env.Counter("pspf_dropped_total", "reason", "expr_error")}
	m.unit = 1e6 // unix_ms, the default
	if c.TimeFormat != "" {
		var ok bool
		if m.unit, ok = timeunit.UnixNanos(c.TimeFormat); !ok {
			return nil, fmt.Errorf("map: time_format %q: must be unix_s, unix_ms, unix_us or unix_ns", c.TimeFormat)
		}
	}
	order := c.order
	if len(order) != len(c.Set) {
		order = make([]string, 0, len(c.Set))
		for k := range c.Set {
			order = append(order, k)
		}
		slices.Sort(order)
	}
	for _, name := range order {
		p, err := expr.Compile(c.Set[name])
		if err != nil {
			return nil, fmt.Errorf("map: set %s: %w", name, err)
		}
		m.sets = append(m.sets, assignment{name: name, prog: p})
	}
	var err error
	if c.Key != "" {
		if m.key, err = expr.Compile(c.Key); err != nil {
			return nil, fmt.Errorf("map: key: %w", err)
		}
	}
	if c.EventTime != "" {
		if m.eventTime, err = expr.Compile(c.EventTime); err != nil {
			return nil, fmt.Errorf("map: event_time: %w", err)
		}
	}
	return m, nil
}

// Process applies the expressions to every record, keeping the order of the
// records. Records it fails on go to b.Dead.
func (m *Map) Process(_ context.Context, b *agent.Batch) error {
	_, failed := b.Keep(m.component, func(r *agent.Record) (bool, error) { return true, m.apply(r) })
	if failed > 0 {
		m.failed.Add(failed)
	}
	return nil
}

var (
	errNil       = errors.New("result is nil")
	errNotFinite = errors.New("result is not a finite number")
)

func (m *Map) apply(r *agent.Record) error {
	for _, a := range m.sets {
		v, err := a.prog.Eval(r)
		if err == nil {
			err = checkValue(v)
		}
		if err != nil {
			return fmt.Errorf("map: set %s: %w", a.name, err)
		}
		r.Set(v.Field(a.name))
	}
	if m.key != nil {
		v, err := m.key.Eval(r)
		if err == nil {
			err = checkValue(v)
		}
		if err != nil {
			return fmt.Errorf("map: key: %w", err)
		}
		if v.Kind == agent.KindString {
			r.Key = v.Str
		} else {
			m.buf = v.AppendText(m.buf[:0])
			r.Key = string(m.buf)
		}
	}
	if m.eventTime != nil {
		v, err := m.eventTime.Eval(r)
		if err == nil {
			err = checkValue(v)
		}
		if err == nil {
			r.EventTime, err = m.toTime(v)
		}
		if err != nil {
			return fmt.Errorf("map: event_time: %w", err)
		}
	}
	return nil
}

func checkValue(v expr.Value) error {
	switch {
	case v.Kind == 0:
		return errNil
	case v.Kind == agent.KindFloat && (math.IsNaN(v.Float) || math.IsInf(v.Float, 0)):
		return errNotFinite
	}
	return nil
}

// toTime converts an event time result to Unix nanoseconds.
func (m *Map) toTime(v expr.Value) (int64, error) {
	switch v.Kind {
	case agent.KindInt:
		if v.Int > math.MaxInt64/m.unit || v.Int < math.MinInt64/m.unit {
			return 0, fmt.Errorf("time %d out of range", v.Int)
		}
		return v.Int * m.unit, nil
	case agent.KindFloat:
		// Whole and fractional units apart, to keep what precision there is.
		whole, frac := math.Modf(v.Float)
		if whole >= float64(math.MaxInt64/m.unit) || whole <= float64(math.MinInt64/m.unit) {
			return 0, fmt.Errorf("time %g out of range", v.Float)
		}
		return int64(whole)*m.unit + int64(math.Round(frac*float64(m.unit))), nil
	case agent.KindString:
		t, err := time.Parse(time.RFC3339Nano, v.Str)
		if err != nil {
			return 0, fmt.Errorf("time %q is not RFC 3339: %w", v.Str, err)
		}
		return t.UnixNano(), nil
	}
	return 0, fmt.Errorf("time must be a number or an RFC 3339 string, got %s", v)
}
