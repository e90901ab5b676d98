package mqtt

import (
	"errors"
	"fmt"
	"strings"
)

// levelKind is what one level of a topic template does.
type levelKind uint8

const (
	levelLiteral levelKind = iota // must equal the topic's level
	levelField                    // {name}: the topic's level becomes a string field
	levelAny                      // +: any one level, not kept
	levelRest                     // # (last): any number of remaining levels
)

type level struct {
	kind levelKind
	text string // the literal, or the field name
}

// template turns topic levels into fields: sensors/{site}/{device}/temp.
// The zero template (no levels) matches nothing and is used when none is set.
type template struct {
	levels []level
	names  []string // field names in level order
}

// parseTemplate parses a topic template; "" is no template.
func parseTemplate(s string) (*template, error) {
	if s == "" {
		return nil, nil
	}
	t := &template{}
	parts := strings.Split(s, "/")
	for i, p := range parts {
		switch {
		case p == "+":
			t.levels = append(t.levels, level{kind: levelAny})
		case p == "#":
			if i != len(parts)-1 {
				return nil, errors.New("# must be the last level")
			}
			t.levels = append(t.levels, level{kind: levelRest})
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			name := p[1 : len(p)-1]
			if name == "" || strings.ContainsAny(name, "{}+#") {
				return nil, fmt.Errorf("level %d: field name must not be empty or hold {}+#", i+1)
			}
			for _, n := range t.names {
				if n == name {
					return nil, fmt.Errorf("field {%s} appears twice", name)
				}
			}
			t.levels = append(t.levels, level{kind: levelField, text: name})
			t.names = append(t.names, name)
		case strings.ContainsAny(p, "{}+#"):
			return nil, fmt.Errorf("level %d: a level is a literal, {name}, + or #", i+1)
		default:
			t.levels = append(t.levels, level{kind: levelLiteral, text: p})
		}
	}
	return t, nil
}

// match splits topic along the template and stores each field's value in
// vals (len(vals) == len(t.names)), without allocating: the values are
// substrings of topic. It reports whether the topic fits the template.
func (t *template) match(topic string, vals []string) bool {
	rest, k := topic, 0
	for i, l := range t.levels {
		if l.kind == levelRest {
			return true
		}
		if i > 0 {
			var ok bool
			if _, rest, ok = strings.Cut(rest, "/"); !ok {
				return false
			}
		}
		cur := rest
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			cur = rest[:j]
		}
		switch l.kind {
		case levelLiteral:
			if cur != l.text {
				return false
			}
		case levelField:
			vals[k] = cur
			k++
		}
	}
	// Every level used: the topic must have no more.
	return !strings.Contains(rest, "/")
}

// keyPart is a literal or a template field of a key pattern.
type keyPart struct {
	lit   string
	field int // index into the template's names, or -1 for a literal
}

// parseKey parses a key pattern like "{device}" or "{site}-{device}" against
// the template's fields; "" is no key.
func parseKey(s string, t *template) ([]keyPart, error) {
	if s == "" {
		return nil, nil
	}
	if t == nil {
		return nil, errors.New("needs a topic_template to take fields from")
	}
	var parts []keyPart
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			parts = append(parts, keyPart{lit: s, field: -1})
			break
		}
		if i > 0 {
			parts = append(parts, keyPart{lit: s[:i], field: -1})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, errors.New("unterminated {")
		}
		name := s[i+1 : i+j]
		idx := -1
		for k, n := range t.names {
			if n == name {
				idx = k
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("{%s} is not a field of topic_template", name)
		}
		parts = append(parts, keyPart{field: idx})
		s = s[i+j+1:]
	}
	return parts, nil
}

// buildKey renders a key pattern from the matched values. A key of one field
// is that field's substring of the topic: no allocation.
func buildKey(parts []keyPart, vals []string) string {
	if len(parts) == 1 && parts[0].field >= 0 {
		return vals[parts[0].field]
	}
	var b strings.Builder
	for _, p := range parts {
		if p.field >= 0 {
			b.WriteString(vals[p.field])
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}
