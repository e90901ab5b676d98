package decode

import (
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
	d, _ := decoder(f, func(c *Config) { c.MaxDepth = 4; c.MaxFields = 16; c.KeyField = "a"; c.TimeField = "b" })
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, d, data) })
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
	d, _ := decoder(f, func(c *Config) {
		c.Format = "csv"
		c.CSV.Columns = []Column{{Name: "s", Type: "string"}, {Name: "t", Type: "float"}, {Name: "n"}}
	})
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, d, data) })
}

func FuzzDecodeLine(f *testing.F) {
	for _, s := range []string{"hello\n", "a\xffb\r\n", "", "\n\n"} {
		f.Add([]byte(s))
	}
	d, _ := decoder(f, func(c *Config) { c.Format = "line"; c.MaxBytes = 1 << 10 })
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, d, data) })
}
