package decode

import (
	"context"
	"strings"
	"testing"

	"github.com/tinylib/msgp/msgp"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

// show renders a record's fields as "name=kind:value ..." for comparisons.
func show(r *agent.Record) string {
	var b strings.Builder
	for i, f := range r.Fields {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.Name + "=" + f.Kind.String() + ":" + string(f.AppendText(nil)))
	}
	return b.String()
}

func decoder(t testing.TB, mod func(*Config)) (*Decoder, agent.Env) {
	t.Helper()
	c := DefaultConfig()
	if mod != nil {
		mod(c)
	}
	env := agenttest.Env()
	d, err := New(c, env)
	if err != nil {
		t.Fatal(err)
	}
	return d, env
}

func TestJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"flat", `{"sensor":"s1","temp":21.5,"n":3,"ok":true,"x":null}`, "sensor=string:s1 temp=float:21.5 n=int:3 ok=bool:true"},
		{"nested", `{"a":{"b":1,"c":{"d":"x"}},"e":2}`, "a.b=int:1 a.c.d=string:x e=int:2"},
		{"array raw", `{"v":[1, {"a":2}, "x"]}`, `v=bytes:[1, {"a":2}, "x"]`},
		{"escapes", `{"s":"a\"b\\c\n\u00e9\ud83d\ude00"}`, "s=string:a\"b\\c\né😀"},
		{"bad surrogate", `{"s":"\ud800x"}`, "s=string:\uFFFDx"},
		{"escaped key", `{"a\u0062":1}`, "ab=int:1"},
		{"numbers", `{"a":-0,"b":1e3,"c":-2.5E-1,"d":12345678901234567890,"e":9223372036854775807}`, "a=int:0 b=float:1000 c=float:-0.25 d=float:1.2345678901234567e+19 e=int:9223372036854775807"},
		{"duplicate keys", `{"a":1,"a":2}`, "a=int:2"},
		{"whitespace", " \n{ \"a\" : 1 , \"b\" : { } }\n", "a=int:1"},
		{"empty", `{}`, ""},
		{"invalid utf8", "{\"s\":\"a\xffb\"}", "s=string:a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := decoder(t, nil)
			r := agent.Record{Raw: []byte(tt.in)}
			if err := d.Record(&r); err != nil {
				t.Fatalf("got error %v", err)
			}
			if got := show(&r); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if r.Raw != nil {
				t.Errorf("got raw %q, want it dropped", r.Raw)
			}
		})
	}
}

func TestJSONErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
		mod            func(*Config)
	}{
		{"not object", `[1]`, "decode: json: payload is not a JSON object", nil},
		{"empty", ``, "decode: json: payload is not a JSON object", nil},
		{"truncated", `{"a":1`, "decode: json: offset 6: unexpected end of payload", nil},
		{"trailing", `{"a":1} x`, "decode: json: offset 8: unexpected data after the object", nil},
		{"bad literal", `{"a":tru}`, "decode: json: offset 5: unexpected character 't'", nil},
		{"leading zero", `{"a":01}`, "decode: json: offset 6: unexpected character '1'", nil},
		{"bad number", `{"a":-}`, "decode: json: offset 6: bad number", nil},
		{"huge number", `{"a":1e999}`, "decode: json: offset 5: number 1e999 is out of range", nil},
		{"control char", "{\"a\":\"x\ty\"}", "decode: json: offset 7: control character in string", nil},
		{"bad escape", `{"a":"\q"}`, `decode: json: offset 6: bad escape \q`, nil},
		{"unterminated", `{"a":"xx`, "decode: json: offset 8: unterminated string", nil},
		{"missing colon", `{"a" 1}`, "decode: json: offset 5: unexpected character '1'", nil},
		{"too deep", `{"a":{"b":{"c":1}}}`, "decode: json: offset 10: nested deeper than max_depth (2)", func(c *Config) { c.MaxDepth = 2 }},
		{"too many fields", `{"a":1,"b":2,"c":3}`, "decode: json: more than max_fields (2) fields", func(c *Config) { c.MaxFields = 2 }},
		{"too large", `{"a":1}`, "decode: payload of 7 bytes is larger than max_bytes (4)", func(c *Config) { c.MaxBytes = 4 }},
		{"arrays rejected", `{"a":[1]}`, "decode: json: offset 5: field a is an array (arrays: reject)", func(c *Config) { c.Arrays = "reject" }},
		{"bad array", `{"a":[1,]}`, "decode: json: offset 8: unexpected character ']'", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := decoder(t, tt.mod)
			r := agent.Record{Raw: []byte(tt.in), Fields: []agent.Field{agent.Int("pre", 1)}}
			err := d.Record(&r)
			if err == nil {
				t.Fatalf("got no error, want %q", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if got := show(&r); got != "pre=int:1" {
				t.Errorf("fields after an error: got %s, want pre=int:1", got)
			}
		})
	}
}

func TestKeyAndTime(t *testing.T) {
	tests := []struct {
		name, format, in, key string
		time                  int64
		err                   string
	}{
		{"ms", "unix_ms", `{"id":"d1","ts":1700000000125}`, "d1", 1700000000125e6, ""},
		{"s float", "unix_s", `{"id":7,"ts":1700000000.5}`, "7", 17000000005e8, ""},
		{"ns string", "unix_ns", `{"id":"d1","ts":"1700000000125000000"}`, "d1", 1700000000125e6, ""},
		{"rfc3339", "rfc3339", `{"id":"d1","ts":"2024-01-02T03:04:05.5Z"}`, "d1", 1704164645500e6, ""},
		{"absent", "unix_ms", `{"id":"d1"}`, "d1", 0, ""},
		{"bad rfc3339", "rfc3339", `{"ts":12}`, "", 0, "decode: time_field ts: must be RFC 3339 text, got a int"},
		{"bad number", "unix_ms", `{"ts":"soon"}`, "", 0, `decode: time_field ts: must be a number, got "soon"`},
		{"out of range", "unix_s", `{"ts":1e300}`, "", 0, "decode: time_field ts: 1e+300 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := decoder(t, func(c *Config) { c.KeyField, c.TimeField, c.TimeFormat = "id", "ts", tt.format })
			r := agent.Record{Raw: []byte(tt.in)}
			err := d.Record(&r)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Key != tt.key || r.EventTime != tt.time {
				t.Errorf("got key %q time %d, want %q %d", r.Key, r.EventTime, tt.key, tt.time)
			}
		})
	}
}

func TestMsgpack(t *testing.T) {
	enc := func(f func(b []byte) []byte) []byte { return f(nil) }
	tests := []struct {
		name string
		in   []byte
		want string
		err  string
	}{
		{"flat", enc(func(b []byte) []byte {
			b = msgp.AppendMapHeader(b, 6)
			b = msgp.AppendString(b, "sensor")
			b = msgp.AppendString(b, "s1")
			b = msgp.AppendString(b, "temp")
			b = msgp.AppendFloat64(b, 21.5)
			b = msgp.AppendString(b, "n")
			b = msgp.AppendInt(b, -3)
			b = msgp.AppendString(b, "u")
			b = msgp.AppendUint64(b, 1<<63)
			b = msgp.AppendString(b, "ok")
			b = msgp.AppendBool(b, true)
			b = msgp.AppendString(b, "none")
			return msgp.AppendNil(b)
		}), "sensor=string:s1 temp=float:21.5 n=int:-3 u=float:9.223372036854776e+18 ok=bool:true", ""},
		{"nested and array", enc(func(b []byte) []byte {
			b = msgp.AppendMapHeader(b, 2)
			b = msgp.AppendString(b, "gps")
			b = msgp.AppendMapHeader(b, 1)
			b = msgp.AppendString(b, "lat")
			b = msgp.AppendFloat32(b, 1.5)
			b = msgp.AppendString(b, "v")
			b = msgp.AppendArrayHeader(b, 1)
			return msgp.AppendInt(b, 1)
		}), "gps.lat=float:1.5 v=bytes:\x91\x01", ""},
		{"not a map", msgp.AppendInt(nil, 1), "", "decode: msgpack: payload is not a msgpack map"},
		{"lying header", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a'}, "", "decode: msgpack: map of 4294967295 entries is longer than the payload"},
		{"truncated", []byte{0x81, 0xa1, 'a'}, "", "decode: msgpack: field a: truncated or invalid value"},
		{"trailing", append(msgp.AppendMapHeader(nil, 0), 1), "", "decode: msgpack: offset 1: unexpected data after the map"},
		{"int key", []byte{0x81, 0x01, 0x01}, "", "decode: msgpack: map key: msgp: attempted to decode type \"int\" with method for \"str\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := decoder(t, func(c *Config) { c.Format = "msgpack" })
			r := agent.Record{Raw: tt.in}
			err := d.Record(&r)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := show(&r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCSV(t *testing.T) {
	cols := []Column{{Name: "sensor", Type: "string"}, {Name: "temp", Type: "float"}, {Name: "n", Type: "int"}, {Name: "ok", Type: "bool"}, {Name: "any"}}
	tests := []struct {
		name, in, want, err string
	}{
		{"plain", "s1,21.5,3,true,x\n", "sensor=string:s1 temp=float:21.5 n=int:3 ok=bool:true any=string:x", ""},
		{"auto number", "s1,1,2,false,4.5\r\n", "sensor=string:s1 temp=float:1 n=int:2 ok=bool:false any=float:4.5", ""},
		{"quoted", `"a ""b"", c",1,2,1,"7"`, `sensor=string:a "b", c temp=float:1 n=int:2 ok=bool:true any=int:7`, ""},
		{"empty cells", ",,,,", "sensor=string:", ""},
		{"too few", "a,1", "", "decode: csv: got 2 cells, want 5 (one per column)"},
		{"too many", "a,1,2,true,x,y", "", "decode: csv: more than the 5 cells of the columns"},
		{"bad int", "a,1,x,true,x", "", `decode: csv: column n: "x" is not an int`},
		{"bad quote", `a"b,1,2,true,x`, "", "decode: csv: cell 1: quote inside an unquoted cell"},
		{"unterminated", `"ab,1,2,true,x`, "", "decode: csv: cell 1: unterminated quote"},
		{"two lines", "a,1,2,true,x\nb,1,2,true,x", "", "decode: csv: cell 5: line break outside quotes: one line per payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := decoder(t, func(c *Config) { c.Format = "csv"; c.CSV.Columns = cols })
			r := agent.Record{Raw: []byte(tt.in)}
			err := d.Record(&r)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := show(&r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCSVAuto types the cells of an auto column as strconv reads them.
func TestCSVAuto(t *testing.T) {
	tests := []struct{ in, want string }{
		{"42", "int:42"}, {"+5", "int:5"}, {"-0", "int:0"}, {" 7 ", "int:7"},
		{"9223372036854775808", "float:9.223372036854776e+18"},
		{".5", "float:0.5"}, {"-2.5e-3", "float:-0.0025"}, {"1e3", "float:1000"},
		{"inf", "float:+Inf"}, {"-Infinity", "float:-Inf"}, {"NaN", "float:NaN"}, {"0x1p3", "float:8"},
		{"true", "bool:true"}, {"false", "bool:false"},
		{"True", "string:True"}, {"th-0042", "string:th-0042"}, {"+", "string:+"}, {"-", "string:-"},
		{"1_000", "float:1000"}, {"0x10", "string:0x10"}, {"infinite", "string:infinite"}, {"n/a", "string:n/a"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, _ := decoder(t, func(c *Config) { c.Format = "csv"; c.CSV.Columns = []Column{{Name: "v"}} })
			r := agent.Record{Raw: []byte(tt.in)}
			if err := d.Record(&r); err != nil {
				t.Fatal(err)
			}
			if got := show(&r); got != "v="+tt.want {
				t.Errorf("got %s, want v=%s", got, tt.want)
			}
		})
	}
}

func TestLineAndRaw(t *testing.T) {
	tests := []struct{ format, in, want string }{
		{"line", "hello world\r\n", "message=string:hello world"},
		{"line", "a\xffb\n", "message=string:a\uFFFDb"},
		{"raw", "hello\n", "message=string:hello\n"},
		{"line", "", "message=string:"},
	}
	for _, tt := range tests {
		t.Run(tt.format+" "+tt.in, func(t *testing.T) {
			d, _ := decoder(t, func(c *Config) { c.Format = tt.format })
			r := agent.Record{Raw: []byte(tt.in)}
			if err := d.Record(&r); err != nil {
				t.Fatal(err)
			}
			if got := show(&r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProcess(t *testing.T) {
	d, env := decoder(t, func(c *Config) {
		c.Format = "csv"
		c.CSV.Columns = []Column{{Name: "sensor"}, {Name: "temp", Type: "float"}}
	})
	b := &agent.Batch{Records: []agent.Record{
		{ID: "h", Raw: []byte("sensor,temp")},
		{ID: "a", Raw: []byte("s1,1.5")},
		{ID: "x", Raw: []byte("s1,hot")},
		{ID: "b", Raw: []byte("s2,2")},
	}}
	if err := d.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var ids string
	for _, r := range b.Records {
		ids += r.ID
	}
	if ids != "ab" {
		t.Errorf("kept: got %q, want %q", ids, "ab")
	}
	if len(b.Dead) != 1 || b.Dead[0].Record.ID != "x" || string(b.Dead[0].Record.Raw) != "s1,hot" {
		t.Fatalf("dead: got %+v, want record x with its payload", b.Dead)
	}
	if got := agenttest.Dropped(env, "decode_error"); got != 1 {
		t.Errorf("decode_error: got %d, want 1", got)
	}
	if got := agenttest.Dropped(env, "csv_header"); got != 1 {
		t.Errorf("csv_header: got %d, want 1", got)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"operators:\n  - decode:\n      format: xml\n", `test.yaml:3: operators[0].decode.format: must be json, msgpack, csv, line or raw, got "xml"`},
		{"operators:\n  - decode:\n      format: csv\n", `test.yaml:3: operators[0].decode.csv.columns: must list at least one column for format csv`},
		{"operators:\n  - decode:\n      format: csv\n      csv:\n        delimiter: ';;'\n        columns: [{name: a}, {name: a}]\n", `operators[0].decode.csv.columns[1].name: column "a" appears twice`},
		{"operators:\n  - decode:\n      format: json\n      csv: {columns: [{name: a}]}\n", `test.yaml:4: operators[0].decode.csv: is only for format csv, got format "json"`},
		{"operators:\n  - decode:\n      max_bytes: 1GiB\n", `test.yaml:3: operators[0].decode.max_bytes: must be between 1B and 64MiB, got "1GiB"`},
		{"operators:\n  - decode:\n      time_format: ms\n", `must be unix_s, unix_ms, unix_us, unix_ns or rfc3339, got "ms"`},
		{"operators:\n  - decode:\n      format: csv\n      csv:\n        columns: [{name: a, type: double}]\n", `operators[0].decode.csv.columns[0].type: must be auto, string, int, float or bool, got "double"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := agenttest.ParseOperators(tt.text, "decode", Factory())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestREADMESample(t *testing.T) {
	ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "decode", Factory(), agenttest.Env())
	if len(ops) != 2 {
		t.Fatalf("got %d operators, want 2", len(ops))
	}
	b := &agent.Batch{Records: []agent.Record{{Raw: []byte(`{"sensor":"s1","temp":21.5,"ts":1700000000125,"gps":{"lat":52.5}}`)}}}
	if err := ops[0].Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if len(b.Records) != 1 {
		t.Fatalf("got %d records (dead %v), want 1", len(b.Records), b.Dead)
	}
	r := &b.Records[0]
	if got, want := show(r), "sensor=string:s1 temp=float:21.5 ts=int:1700000000125 gps.lat=float:52.5"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if r.Key != "s1" || r.EventTime != 1700000000125e6 {
		t.Errorf("got key %q time %d, want s1 %d", r.Key, r.EventTime, int64(1700000000125e6))
	}
	b = &agent.Batch{Records: []agent.Record{{Raw: []byte("s1;21.5;ok\n")}}}
	if err := ops[1].Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if got, want := show(&b.Records[0]), "sensor=string:s1 temp=float:21.5 status=string:ok"; got != want {
		t.Errorf("csv: got %s, want %s", got, want)
	}
}

// TestJSONOneDecoder decodes payloads one after another with the same
// decoder, as a pipeline does: names change place, nest, repeat, and long
// strings and non-ASCII text follow plain ones.
func TestJSONOneDecoder(t *testing.T) {
	d, _ := decoder(t, nil)
	long := strings.Repeat("x", 40)
	for _, tt := range []struct{ in, want string }{
		{`{"a":1,"b":2}`, "a=int:1 b=int:2"},
		{`{"b":3,"a":4}`, "b=int:3 a=int:4"},
		{`{"a":1,"ab":2,"a":5}`, "a=int:5 ab=int:2"},
		{`{"a":{"b":1},"c":"` + long + `"}`, "a.b=int:1 c=string:" + long},
		{`{"a":null,"b":"` + long + `é"}`, "b=string:" + long + "é"},
		{"{\"b\":\"" + long + "\xff\"}", "b=string:" + long + "\uFFFD"},
		{`{"a":1,"b":2}`, "a=int:1 b=int:2"},
	} {
		r := agent.Record{Raw: []byte(tt.in)}
		if err := d.Record(&r); err != nil {
			t.Fatalf("%s: got error %v", tt.in, err)
		}
		if got := show(&r); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
}
