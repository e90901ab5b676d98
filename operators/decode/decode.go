// Package decode is the decode operator: it turns each record's raw payload
// into typed fields.
//
// Formats:
//
//   - json: one object per payload. Nested objects are flattened into dotted
//     names ({"gps":{"lat":1}} gives the field gps.lat); an array is kept as a
//     bytes field holding its JSON text, or the payload is rejected (arrays:
//     reject). null values give no field. Integers that fit int64 are ints,
//     other numbers floats.
//   - msgpack: one map per payload, with the same rules; an array is kept as
//     a bytes field holding its msgpack encoding; a timestamp becomes an int
//     of Unix nanoseconds.
//   - csv: one line per payload, RFC 4180 quoting, cells mapped to the
//     configured columns, each typed (string, int, float, bool, or auto).
//   - line: the payload as a string field, without its trailing newline.
//   - raw: the payload as a string field, verbatim.
//
// A payload that cannot be decoded (malformed, too large, too many fields,
// too deeply nested, a bad time) goes to the batch's dead-letter list with
// the reason and is counted as pspf_dropped_total{reason="decode_error"}; the
// decoders never panic on input. Sizes are checked before anything is
// allocated. Invalid UTF-8 in strings is replaced by U+FFFD, as encoding/json
// does.
package decode

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/operators/internal/timeunit"
)

// Config is the decode operator's config.
type Config struct {
	// Format is the payload format.
	Format string `yaml:"format" enum:"json,msgpack,csv,line,raw" doc:"payload format: json, msgpack, csv, line or raw"`
	// KeyField names the field whose value becomes the record key.
	KeyField string `yaml:"key_field" doc:"field whose value becomes the record key; if absent from a payload the key is left as it was"`
	// TimeField names the field that holds the event time.
	TimeField string `yaml:"time_field" doc:"field holding the event time; if absent from a payload the receive time stands in"`
	// TimeFormat says how TimeField is written.
	TimeFormat string `yaml:"time_format" enum:"unix_s,unix_ms,unix_us,unix_ns,rfc3339" doc:"how time_field is written: Unix seconds, milliseconds, microseconds, nanoseconds, or RFC 3339 text"`
	// MaxBytes bounds the payload size, so that one bad device cannot make
	// the agent allocate without limit. The limits on these limits: beyond
	// them one payload could take more memory than a small gateway has to
	// spare.
	MaxBytes agent.ByteSize `yaml:"max_bytes" min:"1B" max:"64MiB" doc:"largest payload decoded; larger ones are rejected"`
	// MaxFields bounds the fields one payload may produce, for the same reason.
	MaxFields int `yaml:"max_fields" min:"1" max:"65536" doc:"most fields one payload may produce; payloads with more are rejected"`
	// MaxDepth bounds the nesting of json and msgpack objects.
	MaxDepth int `yaml:"max_depth" min:"1" max:"64" doc:"deepest nesting of json and msgpack objects and arrays"`
	// Arrays says what json and msgpack arrays become.
	Arrays string `yaml:"arrays" enum:"raw,reject" doc:"json and msgpack arrays: raw keeps each as a bytes field holding its encoding, reject rejects the payload"`
	// KeepRaw keeps the payload in the record after it was decoded.
	KeepRaw bool `yaml:"keep_raw" doc:"keep the payload in the record after decoding"`
	// Field names the string field of the line and raw formats.
	Field string `yaml:"field" doc:"line and raw: the name of the string field"`
	// CSV configures the csv format.
	CSV CSVConfig `yaml:"csv" doc:"csv: the columns and the delimiter"`
}

// CSVConfig maps CSV cells to fields.
type CSVConfig struct {
	// Columns name and type the cells, in order.
	Columns []Column `yaml:"columns" doc:"the cells of a line, in order"`
	// Delimiter separates cells: one character.
	Delimiter string `yaml:"delimiter" doc:"the cell separator, one character"`
	// SkipHeader drops a line whose cells are the column names.
	SkipHeader bool `yaml:"skip_header" doc:"drop (and count as reason csv_header) a line whose cells are the column names"`
}

// Column is one CSV column.
type Column struct {
	// Name is the field name.
	Name string `yaml:"name" doc:"field name"`
	// Type is the field type; auto makes an int, a float, a bool or a string,
	// whichever the cell reads as first. An empty cell gives no field, except
	// for string columns.
	Type string `yaml:"type" enum:"auto,string,int,float,bool" doc:"auto (int, float, bool or string, whichever reads first), string, int, float or bool"`
}

// DefaultConfig returns the defaults: json, 1 MiB payloads, 256 fields,
// nesting 16 deep, arrays kept raw, times in Unix milliseconds.
func DefaultConfig() *Config {
	return &Config{
		Format:     "json",
		TimeFormat: "unix_ms",
		MaxBytes:   1 << 20,
		MaxFields:  256,
		MaxDepth:   16,
		Arrays:     "raw",
		Field:      "message",
		CSV:        CSVConfig{Delimiter: ",", SkipHeader: true},
	}
}

// Validate checks the config's rules beyond its fields' tags.
func (c *Config) Validate(n agent.Node) {
	if (c.Format == "line" || c.Format == "raw") && c.Field == "" {
		n.Field("field").Errorf("must not be empty")
	}
	cn := n.Field("csv")
	if c.Format != "csv" {
		if cn.Present() {
			cn.Errorf("is only for format csv, got format %q", c.Format)
		}
		return
	}
	if len(c.CSV.Columns) == 0 {
		cn.Field("columns").Errorf("must list at least one column for format csv")
	}
	seen := map[string]bool{}
	for i, col := range c.CSV.Columns {
		nn := cn.Field("columns").Index(i).Field("name")
		switch {
		case col.Name == "":
			nn.Errorf("must not be empty")
		case seen[col.Name]:
			nn.Errorf("column %q appears twice", col.Name)
		}
		seen[col.Name] = true
	}
	if d := c.CSV.Delimiter; len(d) != 1 || d == `"` || d == "\n" || d == "\r" {
		cn.Field("delimiter").Errorf("must be one character other than a quote or a line break, got %q", cn.Field("delimiter").Text())
	}
}

// Factory returns the decode operator's factory.
func Factory() agent.Factory[agent.Operator] {
	return agent.Typed("decodes payloads (json, msgpack, csv, line, raw) into typed fields", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		return New(c, env)
	})
}

// Decoder is the decode operator. It keeps scratch buffers and a table of
// field names between batches, so it is not safe for concurrent use, as the
// runner guarantees.
type Decoder struct {
	cfg       Config
	unit      int64 // nanoseconds per unit of a numeric time field; 0 for rfc3339
	component string
	failed    *agent.Counter
	headers   *agent.Counter
	names     names
	values    names // short string values: sensor ids and states repeat
	decode    func(d *Decoder, data []byte, r *agent.Record) error
	hint      int // fields of the largest payload so far, to size Fields once

	// Scratch space, reused across records.
	name []byte
	// last are the field names of the last payload by position: a sensor's
	// payloads name the same fields in the same order, and comparing with
	// the name in the same place is cheaper than a map look-up.
	last  []string
	buf   []byte
	cells []int
	depth int
	count int // fields made from the current payload
	text  []byte
}

// errHeader marks a CSV header line: removed, not rejected.
var errHeader = errors.New("csv header line")

// New returns the decode operator for c.
func New(c *Config, env agent.Env) (*Decoder, error) {
	d := &Decoder{
		cfg:       *c,
		component: env.Component,
		failed:    env.Counter("pspf_dropped_total", "reason", "decode_error"),
		headers:   env.Counter("pspf_dropped_total", "reason", "csv_header"),
		names:     newNames(4096),
		values:    newNames(1024),
	}
	if c.TimeFormat != "rfc3339" { // rfc3339: unit 0
		var ok bool
		if d.unit, ok = timeunit.UnixNanos(c.TimeFormat); !ok {
			return nil, fmt.Errorf("decode: time_format %q: must be unix_s, unix_ms, unix_us, unix_ns or rfc3339", c.TimeFormat)
		}
	}
	if c.MaxFields <= 0 || c.MaxDepth <= 0 || c.MaxBytes <= 0 {
		return nil, errors.New("decode: max_bytes, max_fields and max_depth must be positive")
	}
	switch c.Format {
	case "json":
		d.decode = (*Decoder).json
	case "msgpack":
		d.decode = (*Decoder).msgpack
	case "csv":
		if len(c.CSV.Columns) == 0 || len(c.CSV.Delimiter) != 1 {
			return nil, errors.New("decode: csv needs columns and a one-character delimiter")
		}
		d.decode = (*Decoder).csv
	case "line":
		d.decode = (*Decoder).line
	case "raw":
		d.decode = (*Decoder).raw
	default:
		return nil, fmt.Errorf("decode: format %q: must be json, msgpack, csv, line or raw", c.Format)
	}
	return d, nil
}

// Process decodes every record's payload, keeping the order of the records.
// Records whose payload cannot be decoded go to b.Dead.
func (d *Decoder) Process(_ context.Context, b *agent.Batch) error {
	headers, failed := b.Keep(d.component, func(r *agent.Record) (bool, error) {
		if err := d.Record(r); err != nil {
			if err == errHeader {
				return false, nil // a CSV header line: dropped, counted apart
			}
			return false, err
		}
		return true, nil
	})
	if failed > 0 {
		d.failed.Add(failed)
	}
	if headers > 0 {
		d.headers.Add(headers)
	}
	return nil
}

// Record decodes one record's payload into its fields, then sets its key and
// event time from the configured fields. On an error the fields the payload
// added are removed again (a field the payload replaced stays replaced).
func (d *Decoder) Record(r *agent.Record) error {
	data := r.Raw
	if len(data) > int(d.cfg.MaxBytes) {
		return fmt.Errorf("decode: payload of %d bytes is larger than max_bytes (%d)", len(data), d.cfg.MaxBytes)
	}
	n0 := len(r.Fields)
	if cap(r.Fields) < n0+d.hint {
		// One allocation per record, with room for what a map operator
		// adds. The agent's runner usually hands records over with room
		// enough (it learns how many fields they get), and this is skipped.
		fs := make([]agent.Field, n0, n0+d.hint+2)
		copy(fs, r.Fields)
		r.Fields = fs
	}
	d.count, d.depth = 0, 0
	d.name = d.name[:0]
	err := d.decode(d, data, r)
	switch {
	case err == errHeader:
	case err != nil:
		err = fmt.Errorf("decode: %s: %w", d.cfg.Format, err)
	default:
		if err = d.keyAndTime(r); err != nil {
			err = fmt.Errorf("decode: %w", err)
		}
	}
	if err != nil {
		clear(r.Fields[n0:])
		r.Fields = r.Fields[:n0]
		return err
	}
	if d.count > d.hint {
		d.hint = d.count
	}
	if !d.cfg.KeepRaw {
		r.Raw = nil
	}
	return nil
}

// add appends or replaces a field made from the current payload.
func (d *Decoder) add(r *agent.Record, f agent.Field) error {
	d.count++
	if d.count > d.cfg.MaxFields {
		return fmt.Errorf("more than max_fields (%d) fields", d.cfg.MaxFields)
	}
	r.Set(f)
	return nil
}

func (d *Decoder) keyAndTime(r *agent.Record) error {
	if d.cfg.KeyField != "" {
		if f := r.Field(d.cfg.KeyField); f != nil {
			if f.Kind == agent.KindString {
				r.Key = f.Str
			} else {
				d.text = f.AppendText(d.text[:0])
				r.Key = string(d.text)
			}
		}
	}
	if d.cfg.TimeField == "" {
		return nil
	}
	f := r.Field(d.cfg.TimeField)
	if f == nil {
		return nil
	}
	t, err := d.eventTime(f)
	if err != nil {
		return fmt.Errorf("time_field %s: %w", d.cfg.TimeField, err)
	}
	r.EventTime = t
	return nil
}

// eventTime converts a time field to Unix nanoseconds.
func (d *Decoder) eventTime(f *agent.Field) (int64, error) {
	if d.unit == 0 {
		if f.Kind != agent.KindString {
			return 0, fmt.Errorf("must be RFC 3339 text, got a %s", f.Kind)
		}
		t, err := time.Parse(time.RFC3339Nano, f.Str)
		if err != nil {
			return 0, fmt.Errorf("not RFC 3339: %w", err)
		}
		return t.UnixNano(), nil
	}
	switch f.Kind {
	case agent.KindInt:
		return scaleInt(f.Int, d.unit)
	case agent.KindFloat:
		return scaleFloat(f.Float, d.unit)
	case agent.KindString:
		s := strings.TrimSpace(f.Str)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return scaleInt(i, d.unit)
		}
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			return scaleFloat(v, d.unit)
		}
		return 0, fmt.Errorf("must be a number, got %q", f.Str)
	}
	return 0, fmt.Errorf("must be a number, got a %s", f.Kind)
}

func scaleInt(v, unit int64) (int64, error) {
	if v > (1<<63-1)/unit || v < -(1<<63-1)/unit {
		return 0, fmt.Errorf("%d is out of range", v)
	}
	return v * unit, nil
}

func scaleFloat(v float64, unit int64) (int64, error) {
	ns := v * float64(unit)
	if !(ns > -9.2e18 && ns < 9.2e18) { // also false for NaN
		return 0, fmt.Errorf("%g is out of range", v)
	}
	return int64(ns), nil
}

// names interns field names so that decoding a payload with known names
// allocates no name strings. It stops growing at max entries.
type names struct {
	m   map[string]string
	max int
}

func newNames(max int) names { return names{m: map[string]string{}, max: max} }

func (t *names) get(b []byte) string {
	if s, ok := t.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(t.m) < t.max {
		t.m[s] = s
	}
	return s
}

// maxInterned is the longest string value that is interned.
// fieldName returns d.name, the current field's name, as an interned
// string. d.count is the field's position in the payload (it has not been
// added yet).
func (d *Decoder) fieldName() string {
	i := d.count
	if i < len(d.last) && d.last[i] == string(d.name) {
		return d.last[i]
	}
	s := d.names.get(d.name)
	if i < len(d.last) {
		d.last[i] = s
	} else if i == len(d.last) && i < 64 {
		d.last = append(d.last, s)
	}
	return s
}

const maxInterned = 32

// str returns b as a string field value, interned when short, with invalid
// UTF-8 replaced.
func (d *Decoder) str(b []byte) string {
	if len(b) <= maxInterned {
		if s, ok := d.values.m[string(b)]; ok {
			return s
		}
		s := utf8String(b)
		if len(d.values.m) < d.values.max {
			d.values.m[string(b)] = s
		}
		return s
	}
	return utf8String(b)
}

// view returns b as a string without copying, for parsers that do not keep
// it (strconv clones the text it puts in its errors).
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
