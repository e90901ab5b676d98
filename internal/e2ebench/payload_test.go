package e2ebench

import (
	"encoding/json"
	"math"
	"testing"
)

func TestAppendPayload(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  Kind
		size  int
		valid bool
		temp  float64
	}{
		{"valid", KindValid, 200, true, 19.2},
		{"filtered", KindFiltered, 200, true, -99},
		{"invalid", KindInvalid, 200, false, 0},
		{"smaller than the fields", KindValid, 10, true, 19.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := AppendPayload(nil, 42, 1_700_000_000_123_456, tc.kind, tc.size)
			if len(p) < tc.size-1 { // an invalid payload lacks its closing brace
				t.Errorf("got %d bytes, want at least %d", len(p), tc.size)
			}
			if got := json.Valid(p); got != tc.valid {
				t.Fatalf("json.Valid(%s) = %v, want %v", p, got, tc.valid)
			}
			seq, sent, ok := ParseValue(p)
			if !ok || seq != 42 || sent != 1_700_000_000_123_456 {
				t.Errorf("ParseValue = %d, %d, %v; want 42, 1700000000123456, true", seq, sent, ok)
			}
			if !tc.valid {
				return
			}
			var v struct {
				Seq  uint64  `json:"seq"`
				TS   int64   `json:"ts"`
				Temp float64 `json:"temp"`
			}
			if err := json.Unmarshal(p, &v); err != nil {
				t.Fatal(err)
			}
			if v.Seq != 42 || v.TS != 1_700_000_000_123 || v.Temp != tc.temp {
				t.Errorf("got %+v, want seq 42, ts 1700000000123, temp %v", v, tc.temp)
			}
		})
	}
}

func TestParseValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		seq  uint64
		sent int64
		ok   bool
	}{
		{`{"_id":"bench:7","_key":"s001","seq":12,"sent_us":1700000000000001,"temp":21.5}`, 12, 1700000000000001, true},
		{`{"payload":{"seq": 3, "sent_us": 1.7e+15}}`, 3, 1_700_000_000_000_000, true},
		{`{"seq":12}`, 0, 0, false},
		{`{"sent_us":1}`, 0, 0, false},
		{`{"seq":-1,"sent_us":1}`, 0, 0, false},
		{`{"seq":"x","sent_us":1}`, 0, 0, false},
		{``, 0, 0, false},
	} {
		seq, sent, ok := ParseValue([]byte(tc.in))
		if seq != tc.seq || sent != tc.sent || ok != tc.ok {
			t.Errorf("ParseValue(%s) = %d, %d, %v; want %d, %d, %v", tc.in, seq, sent, ok, tc.seq, tc.sent, tc.ok)
		}
	}
}

func TestMixKindOf(t *testing.T) {
	m := Mix{Filtered: 0.02, Invalid: 0.01}
	const n = 200_000
	var counts [3]int
	for s := range uint64(n) {
		k := m.KindOf(s)
		if k != m.KindOf(s) {
			t.Fatalf("KindOf(%d) is not deterministic", s)
		}
		counts[k]++
	}
	for k, want := range []float64{0.97, 0.02, 0.01} {
		if got := float64(counts[k]) / n; math.Abs(got-want) > 0.002 {
			t.Errorf("kind %d: share %.4f, want %.2f ± 0.002", k, got, want)
		}
	}
	if got := m.Expected(n); got != uint64(counts[KindValid]) {
		t.Errorf("Expected(%d) = %d, want %d", n, got, counts[KindValid])
	}
	if got := (Mix{}).Expected(1000); got != 1000 {
		t.Errorf("Mix{}.Expected(1000) = %d, want 1000", got)
	}
}

// TestAppendNoisyPayload checks the incompressible variant: the size, the
// seq and send time where the counter looks for them, valid JSON (or cut
// before the brace), and a pad that differs from one seq to the next.
func TestAppendNoisyPayload(t *testing.T) {
	for _, kind := range []Kind{KindValid, KindFiltered, KindInvalid} {
		p := AppendNoisyPayload(nil, 42, 1_700_000_000_123_456, kind, 4000)
		if len(p) < 3999 {
			t.Errorf("kind %d: %d bytes, want at least 3999", kind, len(p))
		}
		if got := json.Valid(p); got != (kind != KindInvalid) {
			t.Errorf("kind %d: json.Valid = %v", kind, got)
		}
		seq, sent, ok := ParseValue(p)
		if !ok || seq != 42 || sent != 1_700_000_000_123_456 {
			t.Errorf("kind %d: ParseValue = %d, %d, %v", kind, seq, sent, ok)
		}
	}
	a := AppendNoisyPayload(nil, 1, 0, KindValid, 4000)
	b := AppendNoisyPayload(nil, 2, 0, KindValid, 4000)
	if string(a[len(a)-100:]) == string(b[len(b)-100:]) {
		t.Error("two seqs have the same pad")
	}
}
