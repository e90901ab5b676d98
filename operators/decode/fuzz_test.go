package decode

import (
	"bytes"
	"testing"

	"github.com/tinylib/msgp/msgp"

	"github.com/pspf/pspf-edge/agent"
)

// fuzzDecode runs one payload through a decoder and checks what must hold
// whatever the input: no panic, and on an error the record's fields untouched.
func fuzzDecode(t *testing.T, d *Decoder, data []byte) {
	r := agent.Record{Raw: data, Fields: []agent.Field{agent.Int("pre", 1)}}
	if err := d.Record(&r); err != nil {
		if len(r.Fields) != 1 || r.Fields[0].Name != "pre" {
			t.Fatalf("fields changed by a failed decode: %+v", r.Fields)
		}
		return
	}
	if len(r.Fields) > d.cfg.MaxFields+1 {
		t.Fatalf("got %d fields, want at most %d", len(r.Fields), d.cfg.MaxFields+1)
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"sensor":"s1","temp":21.5,"n":3,"ok":true,"x":null}`,
		`{"a":{"b":{"c":[1,2,{"d":"e"}]}}}`,
		`{"s":"a\"b\\c\n\u00e9\ud83d\ude00\ud800"}`,
		`{"a":-0.5e-3,"b":12345678901234567890}`,
		`{"a":1`, `[]`, ``, `{"a":tru}`, "{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	mod := func(c *Config) { c.MaxDepth = 4; c.MaxFields = 16; c.KeyField = "a"; c.TimeField = "b" }
	d, _ := decoder(f, mod)
	lib := withDecode(f, mod, (&fastjsonDecode{validate: true}).decode)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode(t, d, data)
		fuzzSame(t, d, lib, data, "fastjson", jsonDifferences)
	})
}

// jsonDifferences are where the scanner and fastjson may differ: fastjson
// keeps a lone surrogate escape (\ud800) as its six characters, where the
// scanner (as encoding/json) makes it U+FFFD; and fastjson.Validate misses a
// control character in a string before its last escape ("\x18\b"), which
// the scanner refuses (as encoding/json).
var jsonDifferences = differences{accept: func(data []byte) bool {
	return bytes.IndexByte(data, '\\') >= 0 && bytes.IndexFunc(data, func(r rune) bool { return r < 0x20 }) >= 0
}, fields: func(data []byte) bool {
	for i := 0; ; i++ {
		j := bytes.Index(data[i:], []byte(`\u`))
		if j < 0 || i+j+3 >= len(data) {
			return false
		}
		i += j
		if c, n := data[i+2]|0x20, data[i+3]|0x20; c == 'd' && n >= '8' && (n <= '9' || n >= 'a' && n <= 'f') {
			return true
		}
	}
}}

// csvDifferences are where the reader and encoding/csv may differ: a
// carriage return other than the one ending the line is a line break to
// the reader (one line per payload) and data to encoding/csv, which also
// turns \r\n inside quotes into \n; and encoding/csv skips empty lines,
// where the reader refuses a second line.
var csvDifferences = differences{accept: func(data []byte) bool {
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	return bytes.IndexByte(data, '\r') >= 0 || bytes.HasPrefix(data, []byte("\n")) || bytes.HasSuffix(data, []byte("\n")) ||
		bytes.Contains(data, []byte("\n\n"))
}}

// differences says on which payloads the fields, or even whether the
// payload is accepted, may differ between ours and a library's, for a
// reason the README documents. A nil func is never.
type differences struct{ accept, fields func([]byte) bool }

// fuzzSame decodes data with ours and with lib, the decoder parsing with a
// library: both must accept it or both refuse it, and when both accept it,
// make the same fields, except where known says they may differ.
func fuzzSame(t *testing.T, ours, lib *Decoder, data []byte, name string, known differences) {
	t.Helper()
	if known.accept != nil && known.accept(data) {
		return
	}
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
	a, b := run(ours), run(lib)
	switch {
	case (a.err == nil) != (b.err == nil):
		t.Fatalf("%q:\nours: %s %v\n%s: %s %v", data, a.fields, a.err, name, b.fields, b.err)
	case a.err == nil && a.fields != b.fields && (known.fields == nil || !known.fields(data)):
		t.Fatalf("%q:\nours: %s\n%s: %s", data, a.fields, name, b.fields)
	}
}

func FuzzDecodeMsgpack(f *testing.F) {
	b := msgp.AppendMapHeader(nil, 3)
	b = msgp.AppendString(b, "a")
	b = msgp.AppendFloat64(b, 1.5)
	b = msgp.AppendString(b, "m")
	b = msgp.AppendMapHeader(b, 1)
	b = msgp.AppendString(b, "x")
	b = msgp.AppendArrayHeader(b, 2)
	b = msgp.AppendInt(b, 1)
	b = msgp.AppendString(b, "y")
	b = msgp.AppendString(b, "b")
	b = msgp.AppendBytes(b, []byte{1, 2})
	f.Add(b)
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xa1, 'a'})
	f.Add([]byte{0x81, 0xa1, 'a', 0xd6, 0xff, 0, 0, 0, 1})
	d, _ := decoder(f, func(c *Config) { c.Format = "msgpack"; c.MaxDepth = 4; c.MaxFields = 16; c.TimeField = "a" })
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, d, data) })
}

func FuzzDecodeCSV(f *testing.F) {
	for _, s := range []string{"s1,21.5,3\n", `"a ""b"", c",1,2`, ",,", `"ab,1`, "a\"b,1,2", "a,1,2,3", "x\r\n"} {
		f.Add([]byte(s))
	}
	mod := func(c *Config) {
		c.Format = "csv"
		c.CSV.Columns = []Column{{Name: "s", Type: "string"}, {Name: "t", Type: "float"}, {Name: "n"}}
	}
	d, _ := decoder(f, mod)
	lib := withDecode(f, mod, newStdCSV(',').decode)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode(t, d, data)
		fuzzSame(t, d, lib, data, "encoding/csv", csvDifferences)
	})
}

func FuzzDecodeLine(f *testing.F) {
	for _, s := range []string{"hello\n", "a\xffb\r\n", "", "\n\n"} {
		f.Add([]byte(s))
	}
	d, _ := decoder(f, func(c *Config) { c.Format = "line"; c.MaxBytes = 1 << 10 })
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, d, data) })
}
