package kafka

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
)

// buildOne turns kr into a record as take does, with room for its fields
// and its bytes.
func buildOne(b *builder, kr *kgo.Record) agent.Record {
	fields := make([]agent.Field, b.fieldsFor(kr))
	arena := make([]byte, 0, payloadSize(kr))
	var r agent.Record
	b.build(&r, kr, 42, fields, arena)
	return r
}

func TestBuildFields(t *testing.T) {
	ts := time.UnixMilli(1700000000123)
	kr := &kgo.Record{Topic: "cmds", Partition: 3, Offset: 77, Timestamp: ts, Key: []byte("gw-17"), Value: []byte(`{"cmd":"open"}`),
		Headers: []kgo.RecordHeader{{Key: "target", Value: []byte("gw-17")}, {Key: "sig", Value: []byte{0xff, 0x00}}, {Key: "target", Value: []byte("gw-18")}}}
	var dropped agent.Counter
	r := buildOne(newBuilder("kafka", true, true, &dropped), kr)
	if string(r.Raw) != `{"cmd":"open"}` || r.Key != "gw-17" || r.EventTime != ts.UnixNano() || r.RecvTime != 42 || r.Source != "kafka" {
		t.Errorf("got %+v, want the value as Raw, the key, the timestamp as event time", r)
	}
	for _, tc := range []struct {
		name string
		want agent.Field
	}{
		{FieldTopic, agent.String(FieldTopic, "cmds")},
		{FieldPartition, agent.Int(FieldPartition, 3)},
		{FieldOffset, agent.Int(FieldOffset, 77)},
		{FieldTimestamp, agent.Int(FieldTimestamp, 1700000000123)},
		{FieldKey, agent.String(FieldKey, "gw-17")},
		{"kafka.header.target", agent.String("kafka.header.target", "gw-18")}, // the last value of a repeated name
		{"kafka.header.sig", agent.Bytes("kafka.header.sig", []byte{0xff, 0x00})},
	} {
		f := r.Field(tc.name)
		if f == nil || f.Kind != tc.want.Kind || f.Str != tc.want.Str || f.Int != tc.want.Int || !bytes.Equal(f.Bytes, tc.want.Bytes) {
			t.Errorf("field %s: got %+v, want %+v", tc.name, f, tc.want)
		}
	}
	if len(r.Fields) != 7 {
		t.Errorf("got %d fields, want 7: %+v", len(r.Fields), r.Fields)
	}

	// Without metadata and headers: the payload alone, as from MQTT.
	r = buildOne(newBuilder("kafka", false, false, nil), kr)
	if len(r.Fields) != 0 || string(r.Raw) != `{"cmd":"open"}` {
		t.Errorf("got %+v, want no fields", r)
	}

	// A binary key is a bytes field; no key, no field.
	kr.Key = []byte{0xc3, 0x28}
	r = buildOne(newBuilder("kafka", true, false, nil), kr)
	if f := r.Field(FieldKey); f == nil || f.Kind != agent.KindBytes {
		t.Errorf("got %+v, want a bytes key field", f)
	}
	kr.Key = nil
	r = buildOne(newBuilder("kafka", true, false, nil), kr)
	if f := r.Field(FieldKey); f != nil {
		t.Errorf("got %+v, want no key field", f)
	}

	// At most 64 header fields; the rest are counted.
	kr.Headers = nil
	for i := range 70 {
		kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: "h" + strconv.Itoa(i), Value: []byte("v")})
	}
	r = buildOne(newBuilder("kafka", false, true, &dropped), kr)
	if len(r.Fields) != maxHeaderFields || dropped.Get() != 6 {
		t.Errorf("got %d fields and %d dropped, want %d and 6", len(r.Fields), dropped.Get(), maxHeaderFields)
	}
}

// FuzzBuild feeds the record builder keys, values and headers made of
// arbitrary bytes (the headers: name and value alternating, split at 0x00):
// it must not panic, keep within its field bound, and make a record that
// survives the log's encoding and the sinks' JSON.
func FuzzBuild(f *testing.F) {
	f.Add([]byte("gw-17"), []byte(`{"a":1}`), []byte("target\x00gw-17\x00sig\x00\xff\xfe"), true)
	f.Add([]byte{}, []byte{}, []byte{}, false)
	f.Add([]byte{0xc3, 0x28}, []byte{0}, []byte("\x00\x00\x00"), true)
	f.Fuzz(func(t *testing.T, key, value, headers []byte, metadata bool) {
		kr := &kgo.Record{Topic: "t", Partition: 1, Offset: 9, Key: key, Value: value, Timestamp: time.UnixMilli(5)}
		parts := bytes.Split(headers, []byte{0})
		for i := 0; i+1 < len(parts); i += 2 {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: string(parts[i]), Value: parts[i+1]})
		}
		r := buildOne(newBuilder("kafka", metadata, true, nil), kr)
		if len(r.Fields) > 5+maxHeaderFields {
			t.Fatalf("got %d fields, want at most %d", len(r.Fields), 5+maxHeaderFields)
		}
		if !bytes.Equal(r.Raw, value) {
			t.Fatalf("got Raw %q, want the value %q", r.Raw, value)
		}
		enc, err := r.MarshalMsg(nil)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back agent.Record
		if _, err := back.UnmarshalMsg(enc); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		if len(back.Fields) != len(r.Fields) || back.Key != r.Key || !bytes.Equal(back.Raw, r.Raw) {
			t.Fatalf("got %+v after the log's encoding, want %+v", back, r)
		}
		if js := agent.AppendJSON(nil, &r); !json.Valid(js) {
			t.Fatalf("JSON %q is not valid", js)
		}
	})
}
