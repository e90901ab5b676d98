package agent

import (
	"errors"
	"fmt"
	"strings"
)

// Template is a string with placeholders over a record, like
// "telemetry.{site}": {name} is the value of the record's field name as text,
// {_key}, {_source} and {_id} are the record's key, source and ID. Sinks use it
// for topics and paths. It is immutable and safe for concurrent use.
type Template struct {
	parts []tmplPart
	text  string
}

type tmplPart struct {
	lit   string
	field string // "" for a literal
}

// ErrTemplateField is wrapped by Template.Append's error when a record lacks
// a field that the template names.
var ErrTemplateField = errors.New("template: record has no such field")

// ParseTemplate parses s. Braces must pair up and hold a name.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{text: s}
	rest := s
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, tmplPart{lit: rest})
			break
		}
		if rest[i] == '}' {
			return nil, fmt.Errorf("template %q: '}' without '{'", s)
		}
		if i > 0 {
			t.parts = append(t.parts, tmplPart{lit: rest[:i]})
		}
		j := strings.IndexAny(rest[i+1:], "{}")
		if j < 0 || rest[i+1+j] != '}' {
			return nil, fmt.Errorf("template %q: '{' without '}'", s)
		}
		name := rest[i+1 : i+1+j]
		if name == "" {
			return nil, fmt.Errorf("template %q: empty {}", s)
		}
		t.parts = append(t.parts, tmplPart{field: name})
		rest = rest[i+1+j+1:]
	}
	return t, nil
}

// Static reports whether the template has no placeholders.
func (t *Template) Static() bool {
	return len(t.parts) == 0 || len(t.parts) == 1 && t.parts[0].field == ""
}

// String returns the template's text.
func (t *Template) String() string { return t.text }

// Append appends the template expanded over r to dst. A record without a
// named field (or with an empty key for {_key}) is an error wrapping
// ErrTemplateField.
func (t *Template) Append(dst []byte, r *Record) ([]byte, error) {
	for _, p := range t.parts {
		switch p.field {
		case "":
			dst = append(dst, p.lit...)
		case "_key":
			if r.Key == "" {
				return dst, fmt.Errorf("%w: {_key}: record has no key", ErrTemplateField)
			}
			dst = append(dst, r.Key...)
		case "_source":
			dst = append(dst, r.Source...)
		case "_id":
			dst = append(dst, r.ID...)
		default:
			f := r.Field(p.field)
			if f == nil {
				return dst, fmt.Errorf("%w: {%s}", ErrTemplateField, p.field)
			}
			dst = f.AppendText(dst)
		}
	}
	return dst, nil
}
