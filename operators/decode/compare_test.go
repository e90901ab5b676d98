package decode

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/valyala/fastjson"

	"github.com/pspf/pspf-edge/agent"
)

// The hand-written JSON scanner and CSV reader side by side with a
// maintained library doing the same work: github.com/valyala/fastjson and
// the standard library's encoding/csv. Each library stands in for the
// parsing only; the rest (limits, field names and their interning, string
// values, key and time, errors rolled back) is the Decoder's own, so the
// benchmarks compare what a switch would change. The library versions live
// only in this test file: the agent's binary does not link them (go version
// -m shows it). The tests below check that both give the same fields.
//
//	go test -run '^$' -bench 'JSONLibrary|CSVLibrary' -benchmem -count 6 ./operators/decode

// jsonPayloads are realistic payloads: a sensor reading of a few fields,
// the end-to-end benchmark's, nested objects, long strings with escapes,
// and numbers in all their forms.
var jsonPayloads = []struct{ name, data string }{
	{"sensor", `{"device":"th-0042","ts":1764300000123,"temp":21.5,"hum":48.2,"ok":true}`},
	{"e2e", `{"seq":1000042,"sent_us":1764300000123456,"ts":1764300000123,"temp":21.5,"pad":"` + strings.Repeat("x", 100) + `"}`},
	{"nested", `{"device":{"id":"gw-7","fw":"1.4.2","site":{"name":"north","floor":3}},"gps":{"lat":52.520008,"lon":13.404954,"alt":34.1},` +
		`"env":{"temp":{"v":21.5,"unit":"C"},"hum":{"v":48,"unit":"%"},"co2":{"v":612,"unit":"ppm"}},"tags":["roof","outdoor"],"ok":true,"err":null}`},
	{"escapes", `{"device":"cam-3","msg":"` + strings.Repeat(`line \"one\"\n\ttab\\path \u00e9t\u00e9 \u4e2d\u6587 \ud83d\ude00 `, 8) +
		`","path":"C:\\logs\\cam\\2026\\12\\06.log","note":"` + strings.Repeat("plain text without escapes, ", 6) + `"}`},
	{"numbers", `{"i":42,"n":-17,"z":0,"big":9223372036854775807,"min":-9223372036854775808,"huge":12345678901234567890,` +
		`"f":3.14159,"neg":-0.001,"exp":6.02e23,"E":1E-7,"negexp":-2.5e-3,"zero":0.0,"plus":1e+3,"ms":1764300000123,"frac":0.1234567890123}`},
}

// fastjsonDecode is the json format with fastjson parsing: the payload is
// validated (fastjson's parser alone accepts bad numbers, bad escapes and
// control characters in strings, which the decoder refuses), parsed into
// fastjson's tree, and the tree walked into fields. Without validate, it is
// the least a decoder built on fastjson costs.
type fastjsonDecode struct {
	p        fastjson.Parser
	validate bool
	num      []byte
}

func (f *fastjsonDecode) decode(d *Decoder, data []byte, r *agent.Record) error {
	if f.validate {
		if err := fastjson.ValidateBytes(data); err != nil {
			return err
		}
	}
	v, err := f.p.ParseBytes(data)
	if err != nil {
		return err
	}
	o, err := v.Object()
	if err != nil {
		return errors.New("payload is not a JSON object")
	}
	return f.object(d, o, r, 1)
}

func (f *fastjsonDecode) object(d *Decoder, o *fastjson.Object, r *agent.Record, depth int) error {
	if depth > d.cfg.MaxDepth {
		return fmt.Errorf("nested deeper than max_depth (%d)", d.cfg.MaxDepth)
	}
	base := len(d.name)
	var err error
	o.Visit(func(key []byte, v *fastjson.Value) {
		if err != nil {
			return
		}
		d.name = d.name[:base]
		if base > 0 {
			d.name = append(d.name, '.')
		}
		d.name = append(d.name, key...)
		err = f.value(d, v, r, depth)
	})
	d.name = d.name[:base]
	return err
}

func (f *fastjsonDecode) value(d *Decoder, v *fastjson.Value, r *agent.Record, depth int) error {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		return f.object(d, o, r, depth+1)
	case fastjson.TypeArray:
		if arrayDepth(v, depth+1) > d.cfg.MaxDepth {
			return fmt.Errorf("nested deeper than max_depth (%d)", d.cfg.MaxDepth)
		}
		if d.cfg.Arrays == "reject" {
			return fmt.Errorf("field %s is an array (arrays: reject)", d.name)
		}
		return d.add(r, agent.Bytes(d.fieldName(), v.MarshalTo(nil)))
	case fastjson.TypeString:
		s, _ := v.StringBytes()
		return d.add(r, agent.String(d.fieldName(), d.str(s)))
	case fastjson.TypeNumber:
		f.num = v.MarshalTo(f.num[:0])
		field, err := jsonNumber(f.num)
		if err != nil {
			return err
		}
		field.Name = d.fieldName()
		return d.add(r, field)
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return d.add(r, agent.Bool(d.fieldName(), v.Type() == fastjson.TypeTrue))
	}
	return nil // null
}

// arrayDepth is the depth of the deepest value in v, an array at depth.
func arrayDepth(v *fastjson.Value, depth int) int {
	deepest := depth
	var walk func(v *fastjson.Value, depth int)
	walk = func(v *fastjson.Value, depth int) {
		deepest = max(deepest, depth)
		switch v.Type() {
		case fastjson.TypeArray:
			a, _ := v.Array()
			for _, e := range a {
				walk(e, depth+1)
			}
		case fastjson.TypeObject:
			o, _ := v.Object()
			o.Visit(func(_ []byte, e *fastjson.Value) { walk(e, depth+1) })
		}
	}
	walk(v, depth)
	return deepest
}

// jsonNumber applies the decoder's rule to a number's text: an int when it
// is written as one and fits int64, a float otherwise.
func jsonNumber(text []byte) (agent.Field, error) {
	if !bytes.ContainsAny(text, ".eE") {
		if v, err := strconv.ParseInt(view(text), 10, 64); err == nil {
			return agent.Field{Kind: agent.KindInt, Int: v}, nil
		}
	}
	v, err := strconv.ParseFloat(view(text), 64)
	if err != nil {
		return agent.Field{}, fmt.Errorf("number %s is out of range", text)
	}
	return agent.Field{Kind: agent.KindFloat, Float: v}, nil
}

// withDecode returns a decoder for mod whose format is parsed by decode.
func withDecode(t testing.TB, mod func(*Config), decode func(d *Decoder, data []byte, r *agent.Record) error) *Decoder {
	d, _ := decoder(t, mod)
	if decode != nil {
		d.decode = decode
	}
	return d
}

// benchDecode decodes the payload into records that arrive as the runner
// hands them over (a topic field, room for the decoded ones).
func benchDecode(b *testing.B, d *Decoder, data []byte) {
	fields := make([]agent.Field, 0, 64)
	r := &agent.Record{}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		*r = agent.Record{Raw: data, Fields: append(fields[:0], agent.String("topic", "t/1"))}
		if err := d.Record(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONLibrary(b *testing.B) {
	for _, p := range jsonPayloads {
		data := []byte(p.data)
		b.Run(p.name+"/scanner", func(b *testing.B) {
			benchDecode(b, withDecode(b, nil, nil), data)
		})
		b.Run(p.name+"/fastjson", func(b *testing.B) {
			f := &fastjsonDecode{validate: true}
			benchDecode(b, withDecode(b, nil, f.decode), data)
		})
		b.Run(p.name+"/fastjson-unchecked", func(b *testing.B) {
			f := &fastjsonDecode{}
			benchDecode(b, withDecode(b, nil, f.decode), data)
		})
	}
}

// TestJSONSameAsFastjson decodes the benchmark's payloads both ways.
func TestJSONSameAsFastjson(t *testing.T) {
	for _, p := range jsonPayloads {
		t.Run(p.name, func(t *testing.T) {
			got, want := decodeBoth(t, nil, []byte(p.data), (&fastjsonDecode{validate: true}).decode)
			if got.err != nil || want.err != nil {
				t.Fatalf("scanner: %v, fastjson: %v; want both nil", got.err, want.err)
			}
			if got.fields != want.fields {
				t.Errorf("scanner:  %s\nfastjson: %s", got.fields, want.fields)
			}
		})
	}
}

// decoded is what one way of decoding made of a payload.
type decoded struct {
	fields string
	err    error
}

// decodeBoth decodes data with the decoder and with the decoder parsing
// with decode instead. Array fields are compared compacted: fastjson keeps
// no array's text, only its values.
func decodeBoth(t testing.TB, mod func(*Config), data []byte, decode func(d *Decoder, data []byte, r *agent.Record) error) (ours, lib decoded) {
	run := func(d *Decoder) decoded {
		r := agent.Record{Raw: data}
		if err := d.Record(&r); err != nil {
			return decoded{err: err}
		}
		for i, f := range r.Fields {
			if f.Kind == agent.KindBytes && d.cfg.Format == "json" {
				var buf bytes.Buffer
				if err := compactJSON(&buf, f.Bytes); err == nil {
					r.Fields[i].Bytes = buf.Bytes()
				}
			}
		}
		return decoded{fields: show(&r)}
	}
	return run(withDecode(t, mod, nil)), run(withDecode(t, mod, decode))
}

// compactJSON writes src without insignificant space, as fastjson marshals.
func compactJSON(dst *bytes.Buffer, src []byte) error {
	var p fastjson.Parser
	v, err := p.ParseBytes(src)
	if err != nil {
		return err
	}
	dst.Write(v.MarshalTo(nil))
	return nil
}

// csvColumns are the columns of csvPayloads.
var csvColumns = map[string][]Column{
	"sensor": {{Name: "device", Type: "string"}, {Name: "ts", Type: "int"}, {Name: "temp", Type: "float"}, {Name: "hum", Type: "float"}, {Name: "ok", Type: "bool"}},
	"auto":   {{Name: "device"}, {Name: "ts"}, {Name: "temp"}, {Name: "hum"}, {Name: "ok"}},
	"quoted": {{Name: "device", Type: "string"}, {Name: "msg", Type: "string"}, {Name: "n", Type: "int"}, {Name: "text", Type: "string"}},
	"wide": func() []Column {
		cols := make([]Column, 24)
		for i := range cols {
			cols[i] = Column{Name: "c" + strconv.Itoa(i), Type: "float"}
		}
		return cols
	}(),
}

var csvPayloads = []struct{ name, data string }{
	{"sensor", "th-0042,1764300000123,21.5,48.2,true\n"},
	{"auto", "th-0042,1764300000123,21.5,48.2,true\n"},
	{"quoted", `"gw-7","message with ""quotes"", commas, and spaces",42,"first line` + "\n" + `second line, still the same cell"` + "\n"},
	{"wide", strings.TrimSuffix(strings.Repeat("1234.5678,", 24), ",") + "\n"},
}

// stdCSV is the csv format read with encoding/csv: one reader, reused,
// reads each payload through a reader whose bytes are swapped.
type stdCSV struct {
	src bytes.Reader
	r   *csv.Reader
}

func newStdCSV(delim byte) *stdCSV {
	s := &stdCSV{}
	s.r = csv.NewReader(&s.src)
	s.r.Comma = rune(delim)
	s.r.ReuseRecord = true
	s.r.FieldsPerRecord = -1
	return s
}

func (s *stdCSV) decode(d *Decoder, data []byte, r *agent.Record) error {
	s.src.Reset(data)
	defer func() {
		// The reader keeps what it had buffered after an error: read it
		// all, so that the next payload starts afresh.
		for {
			if _, err := s.r.Read(); err == io.EOF {
				return
			}
		}
	}()
	rec, err := s.r.Read()
	if err == io.EOF {
		rec, err = []string{""}, nil // an empty payload is one empty cell
	}
	if err != nil {
		return err
	}
	if _, err := s.r.Read(); err != io.EOF {
		return errors.New("line break outside quotes: one line per payload")
	}
	cols := d.cfg.CSV.Columns
	if len(rec) != len(cols) {
		return fmt.Errorf("got %d cells, want %d (one per column)", len(rec), len(cols))
	}
	if d.cfg.CSV.SkipHeader {
		header := true
		for i, c := range cols {
			if rec[i] != c.Name {
				header = false
				break
			}
		}
		if header {
			return errHeader
		}
	}
	for i, c := range cols {
		f, ok, err := d.csvField(c, unsafe.Slice(unsafe.StringData(rec[i]), len(rec[i])))
		if err != nil {
			return fmt.Errorf("column %s: %w", c.Name, err)
		}
		if ok {
			if err := d.add(r, f); err != nil {
				return err
			}
		}
	}
	return nil
}

func csvConfig(cols []Column) func(*Config) {
	return func(c *Config) { c.Format = "csv"; c.CSV.Columns = cols }
}

func BenchmarkCSVLibrary(b *testing.B) {
	for _, p := range csvPayloads {
		data := []byte(p.data)
		mod := csvConfig(csvColumns[p.name])
		b.Run(p.name+"/reader", func(b *testing.B) {
			benchDecode(b, withDecode(b, mod, nil), data)
		})
		b.Run(p.name+"/encoding-csv", func(b *testing.B) {
			benchDecode(b, withDecode(b, mod, newStdCSV(',').decode), data)
		})
	}
}

// TestCSVSameAsEncodingCSV decodes the benchmark's payloads both ways.
func TestCSVSameAsEncodingCSV(t *testing.T) {
	for _, p := range csvPayloads {
		t.Run(p.name, func(t *testing.T) {
			got, want := decodeBoth(t, csvConfig(csvColumns[p.name]), []byte(p.data), newStdCSV(',').decode)
			if got.err != nil || want.err != nil {
				t.Fatalf("reader: %v, encoding/csv: %v; want both nil", got.err, want.err)
			}
			if got.fields != want.fields {
				t.Errorf("reader:       %s\nencoding/csv: %s", got.fields, want.fields)
			}
		})
	}
}
