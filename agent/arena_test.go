package agent

import (
	"reflect"
	"testing"
)

func sampleRecord() Record {
	return Record{ID: "p:7", Key: "dev-1", Source: "mqtt", EventTime: 5, RecvTime: 6,
		Fields: []Field{String("device", "dev-1"), Float("temp", 21.5), Int("seq", 3), Bool("ok", true),
			Bytes("b", []byte{1, 2}), String("pad", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), String("", "")},
		Raw: []byte(`{"temp":21.5}`)}
}

// sameDecode checks that UnmarshalShared, with an arena of size n, accepts
// exactly what UnmarshalMsg accepts and decodes it to the same record.
func sameDecode(t *testing.T, data []byte, n int) {
	t.Helper()
	var want Record
	wrest, werr := want.UnmarshalMsg(data)
	got := Record{Fields: make([]Field, 0, 2), Raw: make([]byte, 0, 4)} // reused slices, as the sink's
	grest, gerr := got.UnmarshalShared(data, NewStringArena(n))
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("UnmarshalMsg error %v, UnmarshalShared error %v", werr, gerr)
	}
	if werr != nil {
		return
	}
	if len(wrest) != len(grest) {
		t.Fatalf("rest: %d bytes vs %d", len(wrest), len(grest))
	}
	if len(want.Fields) == 0 && len(got.Fields) == 0 {
		want.Fields, got.Fields = nil, nil
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("decoded differently:\n UnmarshalMsg   %+v\n UnmarshalShared %+v", want, got)
	}
}

func TestUnmarshalSharedMatchesUnmarshalMsg(t *testing.T) {
	r := sampleRecord()
	b, err := r.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 10, len(b)} { // no room, some room, room for all
		sameDecode(t, b, n)
	}
	for i := range b { // every truncation fails the same way
		sameDecode(t, b[:i], len(b))
	}
}

// TestArenaStringsOutliveTheirBatch decodes two batches in a row; the first
// batch's strings must be intact after the second.
func TestArenaStringsOutliveTheirBatch(t *testing.T) {
	r1, r2 := sampleRecord(), sampleRecord()
	r2.Key, r2.Fields[0].Str = "other", "other"
	b1, _ := r1.MarshalMsg(nil)
	b2, _ := r2.MarshalMsg(nil)
	var got1, got2 Record
	if _, err := got1.UnmarshalShared(b1, NewStringArena(len(b1))); err != nil {
		t.Fatal(err)
	}
	if _, err := got2.UnmarshalShared(b2, NewStringArena(len(b2))); err != nil {
		t.Fatal(err)
	}
	clear(b1) // the log's buffer is reused: the strings do not alias it
	if got1.Key != "dev-1" || got1.Fields[0].Str != "dev-1" || got1.Fields[5].Str != r1.Fields[5].Str || got2.Key != "other" {
		t.Fatalf("strings changed: %q %q %q", got1.Key, got1.Fields[0].Str, got2.Key)
	}
}

// FuzzUnmarshalShared decodes arbitrary bytes both ways: the same result or
// the same refusal, never a panic.
func FuzzUnmarshalShared(f *testing.F) {
	r := sampleRecord()
	b, _ := r.MarshalMsg(nil)
	f.Add(b, 0)
	f.Add(b, len(b))
	f.Add([]byte{0x97, 0xa1}, 4)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		sameDecode(t, data, min(max(n, 0), 1<<16))
	})
}

func BenchmarkSinkDecode(b *testing.B) {
	r := sampleRecord()
	p, _ := r.MarshalMsg(nil)
	got := make([][]byte, 500) // the payloads of one read from the log
	for i := range got {
		got[i] = p
	}
	recs := make([]Record, len(got))
	b.ReportAllocs()
	for b.Loop() {
		a := NewStringArena(len(got) * len(p))
		for i := range got {
			recs[i] = Record{Fields: recs[i].Fields[:0], Raw: recs[i].Raw[:0]}
			if _, err := recs[i].UnmarshalShared(got[i], a); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(got)), "ns/record")
}
