package agent

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// TestPlain8 checks the word test against the byte test for every byte value
// at every position, among plain neighbours and among other special bytes.
func TestPlain8(t *testing.T) {
	plain := func(c byte) bool { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\' }
	for _, fill := range []byte{'x', ' ', '~', 0x00, 0xff, '"'} {
		for pos := 0; pos < 8; pos++ {
			for v := 0; v < 256; v++ {
				b := []byte{fill, fill, fill, fill, fill, fill, fill, fill}
				b[pos] = byte(v)
				want := true
				for _, c := range b {
					want = want && plain(c)
				}
				if got := plain8(string(b)); got != want {
					t.Fatalf("plain8(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}

// TestAppendJSONStringMatchesEncodingJSON compares the escaping with
// encoding/json's decoding of it for random strings mixing long plain runs
// with every kind of special byte, at every alignment.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	special := []string{"\"", "\\", "\n", "\t", "\x01", "\x7f", "é", "\xff", "\xe2\x82", "€", "\u2028"}
	for range 5000 {
		var b []byte
		for range rng.IntN(6) {
			for range rng.IntN(20) {
				b = append(b, byte('a'+rng.IntN(26)))
			}
			b = append(b, special[rng.IntN(len(special))]...)
		}
		s := string(b)
		out := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q -> %s: not a JSON string: %v", s, out, err)
		}
		want := string([]rune(s)) // invalid UTF-8 becomes U+FFFD, as encoding/json does
		if got != want {
			t.Fatalf("%q -> %s decodes to %q, want %q", s, out, got, want)
		}
	}
}

func BenchmarkAppendJSONString(b *testing.B) {
	s := "sensor-0042 reading with padding xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf = appendJSONString(buf[:0], s)
	}
}
