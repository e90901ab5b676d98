package e2ebench

import (
	"bufio"
	"bytes"
	"testing"
)

func TestRemainingLength(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455} {
		b := appendFixed(nil, 0x30, n)
		if len(b) > 5 {
			t.Fatalf("%d: header of %d bytes, want at most 5", n, len(b))
		}
		r := bufio.NewReader(bytes.NewReader(b[1:]))
		got, err := readRemaining(r)
		if err != nil || got != n {
			t.Errorf("%d: got %d, %v; want %d", n, got, err, n)
		}
	}
	if _, err := readRemaining(bufio.NewReader(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 0x01}))); err == nil {
		t.Error("a five-byte remaining length: no error")
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"mqtt": "tcp://127.0.0.1:1883", "data": "/tmp/d"}
	for _, tc := range []struct{ in, want string }{
		{"agent --mqtt {mqtt} --data {data}", "agent --mqtt tcp://127.0.0.1:1883 --data /tmp/d"},
		{"{unknown} {data}", "{unknown} /tmp/d"},
		{"no placeholders", "no placeholders"},
		{"open { only", "open { only"},
		{"{data}{data}", "/tmp/d/tmp/d"},
	} {
		if got := expand(tc.in, vars); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{3, 1}, 2}, {[]float64{5, 1, 3}, 3}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
