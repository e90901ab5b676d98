package agent

import "testing"

// TestByteSizeString writes sizes as a config file would, and
// parseByteSize reads them back.
func TestByteSizeString(t *testing.T) {
	for v, want := range map[ByteSize]string{256 << 20: "256MiB", 1 << 30: "1GiB", 3 << 19: "1536KiB", 100e6: "100MB", 2000: "2KB", 1500: "1500B", 0: "0B", 4096: "4KiB"} {
		if got := v.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(v), got, want)
		}
		if back, err := parseByteSize(v.String()); err != nil || back != v {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", v.String(), back, err, int64(v))
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "512": 512, "4KiB": 4096, "1.5MiB": 3 << 19, "10MB": 10e6, "1GiB": 1 << 30, "2 KB": 2000} {
		got, err := parseByteSize(in)
		if err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1 parsec", "1e30GiB"} {
		if _, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q): got nil error", in)
		}
	}
}
