package agent_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

func TestAppendJSONIsValidJSON(t *testing.T) {
	r := agent.Record{ID: "p:1", Key: "k\"1", EventTime: 1, Fields: []agent.Field{
		agent.Float("nan", math.NaN()), agent.Float("f", 1.5), agent.Int("i", -3), agent.Bool("b", true),
		agent.String("s", "tab\there \x01 \xff"), agent.Bytes("raw", []byte{0, 1, 2}),
	}}
	var m map[string]any
	if err := json.Unmarshal(agent.AppendJSON(nil, &r), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, agent.AppendJSON(nil, &r))
	}
	if m["nan"] != nil || m["f"] != 1.5 || m["i"] != -3.0 || m["b"] != true || m["raw"] != "AAEC" || m["_key"] != `k"1` {
		t.Errorf("got %v", m)
	}
}

// FuzzAppendJSON checks that any string or bytes give valid JSON.
func FuzzAppendJSON(f *testing.F) {
	f.Add("x", []byte("y"), 1.0)
	f.Add("\xff\x00\"\\", []byte{0xff}, math.Inf(1))
	f.Fuzz(func(t *testing.T, s string, raw []byte, v float64) {
		r := agent.Record{ID: s, Key: s, Fields: []agent.Field{agent.String(s, s), agent.Float("v", v)}}
		if !json.Valid(agent.AppendJSON(nil, &r)) {
			t.Fatalf("invalid JSON for %q", s)
		}
		r2 := agent.Record{Raw: raw}
		if !json.Valid(agent.AppendJSON(nil, &r2)) {
			t.Fatalf("invalid JSON for raw %q", raw)
		}
	})
}

func TestRecordRoundTrip(t *testing.T) {
	r := agent.Record{ID: "p:9", Key: "k", Source: "s", EventTime: 5, RecvTime: 6, Raw: []byte("raw"), Fields: []agent.Field{
		agent.Float("f", 2.5), agent.Int("i", 7), agent.String("s", "x"), agent.Bool("b", true), agent.Bytes("y", []byte{1}),
	}}
	b, err := r.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got agent.Record
	if rest, err := got.UnmarshalMsg(b); err != nil || len(rest) != 0 {
		t.Fatalf("unmarshal: %v, %d bytes left", err, len(rest))
	}
	if got.ID != r.ID || got.Key != r.Key || got.EventTime != 5 || string(got.Raw) != "raw" || len(got.Fields) != 5 {
		t.Fatalf("got %+v", got)
	}
	for i := range r.Fields {
		a, b := r.Fields[i], got.Fields[i]
		if a.Name != b.Name || a.Kind != b.Kind || a.Float != b.Float || a.Int != b.Int || a.Str != b.Str || string(a.Bytes) != string(b.Bytes) {
			t.Errorf("field %d: got %+v, want %+v", i, b, a)
		}
	}
}

// FuzzRecordUnmarshal decodes arbitrary bytes as a record: errors, never a panic.
func FuzzRecordUnmarshal(f *testing.F) {
	r := agent.Record{ID: "a", Fields: []agent.Field{agent.Float("f", 1)}}
	b, _ := r.MarshalMsg(nil)
	f.Add(b)
	f.Add([]byte{0x97, 0xa1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r agent.Record
		r.UnmarshalMsg(data)
	})
}

func TestRecordWithLargeRawRoundTrips(t *testing.T) {
	r := agent.Record{Raw: make([]byte, 1<<20)}
	r.Raw[12345] = 7
	b, err := r.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got agent.Record
	if _, err := got.UnmarshalMsg(b); err != nil || len(got.Raw) != 1<<20 || got.Raw[12345] != 7 {
		t.Fatalf("got %d raw bytes, %v; want the 1 MiB payload back", len(got.Raw), err)
	}
}
