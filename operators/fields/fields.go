// Package fields is the fields operator: it keeps, drops and renames fields.
//
// The steps run in this order: drop, keep, rename. Names in keep and drop may
// be patterns in the syntax of path.Match (`meta.*`, `sensor_?`). Renames run
// in file order; renaming onto an existing name replaces that field; renaming
// a field the record does not have does nothing.
package fields

import (
	"context"
	"path"
	"slices"
	"strings"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the fields operator's config.
type Config struct {
	// Keep lists the fields to keep; the others are removed.
	Keep []string `yaml:"keep" doc:"fields to keep (names or patterns like meta.*); all others are removed"`
	// Drop lists the fields to remove.
	Drop []string `yaml:"drop" doc:"fields to remove (names or patterns like meta.*)"`
	// Rename maps old names to new ones.
	Rename map[string]string `yaml:"rename" doc:"fields to rename, as old: new; applied in file order after keep and drop"`

	// order is the file order of Rename's keys, taken by Validate.
	order []string
}

// DefaultConfig returns the defaults: nothing to do.
func DefaultConfig() *Config { return &Config{} }

// Validate checks that there is something to do and that patterns are valid.
func (c *Config) Validate(n agent.Node) {
	if len(c.Keep) == 0 && len(c.Drop) == 0 && len(c.Rename) == 0 {
		n.Errorf("must have at least one of keep, drop or rename")
	}
	for key, list := range map[string][]string{"keep": c.Keep, "drop": c.Drop} {
		for i, p := range list {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				n.Field(key).Index(i).Errorf("must be a field name or a pattern like meta.*, got %q", n.Field(key).Index(i).Text())
			}
		}
	}
	rn := n.Field("rename")
	c.order = rn.Keys()
	for _, k := range c.order {
		if c.Rename[k] == "" || k == "" {
			rn.Field(k).Errorf("must rename a field to a non-empty name")
		}
	}
}

// Factory returns the fields operator's factory.
func Factory() agent.Factory[agent.Operator] {
	return agent.Typed("keeps, drops and renames fields", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env), nil
	})
}

// matcher is a name or a pattern.
type matcher struct {
	name    string
	pattern bool
}

func (m matcher) match(name string) bool {
	if !m.pattern {
		return m.name == name
	}
	ok, _ := path.Match(m.name, name)
	return ok
}

func matchers(list []string) []matcher {
	out := make([]matcher, len(list))
	for i, s := range list {
		out[i] = matcher{name: s, pattern: strings.ContainsAny(s, `*?[\`)}
	}
	return out
}

func anyMatch(ms []matcher, name string) bool {
	for _, m := range ms {
		if m.match(name) {
			return true
		}
	}
	return false
}

// Fields is the fields operator.
type Fields struct {
	keep, drop []matcher
	renames    [][2]string
}

// New returns the fields operator for c.
func New(c *Config, _ agent.Env) *Fields {
	f := &Fields{keep: matchers(c.Keep), drop: matchers(c.Drop)}
	order := c.order
	if len(order) != len(c.Rename) {
		order = order[:0:0]
		for k := range c.Rename {
			order = append(order, k)
		}
		slices.Sort(order)
	}
	for _, k := range order {
		f.renames = append(f.renames, [2]string{k, c.Rename[k]})
	}
	return f
}

// Process changes the fields of every record in place; it never fails.
func (f *Fields) Process(_ context.Context, b *agent.Batch) error {
	for i := range b.Records {
		f.Record(&b.Records[i])
	}
	return nil
}

// Record changes the fields of one record.
func (f *Fields) Record(r *agent.Record) {
	if len(f.drop) > 0 || len(f.keep) > 0 {
		w := 0
		for i := range r.Fields {
			name := r.Fields[i].Name
			if anyMatch(f.drop, name) || len(f.keep) > 0 && !anyMatch(f.keep, name) {
				continue
			}
			r.Fields[w] = r.Fields[i]
			w++
		}
		clear(r.Fields[w:])
		r.Fields = r.Fields[:w]
	}
	for _, rn := range f.renames {
		src := r.Field(rn[0])
		if src == nil || rn[0] == rn[1] {
			continue
		}
		v := *src
		v.Name = rn[1]
		r.Delete(rn[0])
		r.Set(v)
	}
}
