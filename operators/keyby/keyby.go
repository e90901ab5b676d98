// Package keyby is the key_by operator: it sets the record key from one field,
// or from several joined by a separator.
//
// A string field is used as it is, without allocating; other kinds are
// written as text (numbers in their shortest form). A record that lacks one of
// the fields goes to the batch's dead-letter list and is counted as
// pspf_dropped_total{reason="missing_key"}, unless missing is "empty", which
// uses an empty string for the absent part.
package keyby

import (
	"context"
	"fmt"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the key_by operator's config.
type Config struct {
	// Field is the one field whose value becomes the key.
	Field string `yaml:"field" doc:"field whose value becomes the key"`
	// Fields are several fields whose values, joined by Separator, become the key.
	Fields []string `yaml:"fields" doc:"fields whose values, joined by separator, become the key"`
	// Separator joins the values of Fields.
	Separator string `yaml:"separator" doc:"joins the values of fields"`
	// Missing says what a record without a key field becomes.
	Missing string `yaml:"missing" enum:"reject,empty" doc:"a record lacking a key field: reject (dead-letter it) or empty (use an empty string for that part)"`
}

// DefaultConfig returns the defaults: "/" between parts, reject on a missing field.
func DefaultConfig() *Config { return &Config{Separator: "/", Missing: "reject"} }

// Validate checks that exactly one of field and fields is set.
func (c *Config) Validate(n agent.Node) {
	switch {
	case c.Field == "" && len(c.Fields) == 0:
		n.Errorf("must have field or fields")
	case c.Field != "" && len(c.Fields) > 0:
		n.Field("fields").Errorf("must not be set together with field")
	}
	for i, f := range c.Fields {
		if f == "" {
			n.Field("fields").Index(i).Errorf("must not be empty")
		}
	}
}

// Factory returns the key_by operator's factory.
func Factory() agent.Factory[agent.Operator] {
	return agent.Typed("sets the record key from one or more fields", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env), nil
	})
}

// KeyBy is the key_by operator. It keeps a scratch buffer, so it is not safe
// for concurrent use, as the runner guarantees.
type KeyBy struct {
	fields    []string
	sep       string
	empty     bool
	component string
	missing   *agent.Counter
	buf       []byte
}

// New returns the key_by operator for c.
func New(c *Config, env agent.Env) *KeyBy {
	k := &KeyBy{fields: c.Fields, sep: c.Separator, empty: c.Missing == "empty", component: env.Component,
		missing: env.Counter("pspf_dropped_total", "reason", "missing_key")}
	if c.Field != "" {
		k.fields = []string{c.Field}
	}
	return k
}

// Process sets the key of every record, keeping their order; records that
// lack a key field go to b.Dead unless missing is "empty".
func (k *KeyBy) Process(_ context.Context, b *agent.Batch) error {
	_, failed := b.Keep(k.component, func(r *agent.Record) (bool, error) {
		if name, ok := k.Key(r); !ok {
			return false, fmt.Errorf("key_by: field %q is missing", name)
		}
		return true, nil
	})
	if failed > 0 {
		k.missing.Add(failed)
	}
	return nil
}

// Key sets r's key. If a field is missing and missing is "reject", it returns
// that field's name and false, and leaves the key as it was.
func (k *KeyBy) Key(r *agent.Record) (string, bool) {
	if len(k.fields) == 1 {
		f := r.Field(k.fields[0])
		switch {
		case f == nil && !k.empty:
			return k.fields[0], false
		case f == nil:
			r.Key = ""
		case f.Kind == agent.KindString:
			r.Key = f.Str
		default:
			k.buf = f.AppendText(k.buf[:0])
			r.Key = string(k.buf)
		}
		return "", true
	}
	k.buf = k.buf[:0]
	for i, name := range k.fields {
		if i > 0 {
			k.buf = append(k.buf, k.sep...)
		}
		f := r.Field(name)
		if f == nil {
			if !k.empty {
				return name, false
			}
			continue
		}
		k.buf = f.AppendText(k.buf)
	}
	r.Key = string(k.buf)
	return "", true
}
