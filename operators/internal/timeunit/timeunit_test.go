package timeunit

import (
	"testing"
	"time"
)

func TestNanos(t *testing.T) {
	for unit, want := range map[string]time.Duration{"s": time.Second, "ms": time.Millisecond, "us": time.Microsecond, "ns": time.Nanosecond} {
		if got, ok := Nanos(unit); !ok || got != int64(want) {
			t.Errorf("Nanos(%q) = %d, %v; want %d, true", unit, got, ok, int64(want))
		}
		if got, ok := UnixNanos("unix_" + unit); !ok || got != int64(want) {
			t.Errorf("UnixNanos(%q) = %d, %v; want %d, true", "unix_"+unit, got, ok, int64(want))
		}
		if got, ok := UnixNanos(unit); ok {
			t.Errorf("UnixNanos(%q) = %d, true; want false", unit, got)
		}
	}
	for _, name := range []string{"", "rfc3339", "unix_", "m", "unix_h", "S", "unix_s "} {
		if got, ok := Nanos(name); ok {
			t.Errorf("Nanos(%q) = %d, true; want false", name, got)
		}
		if got, ok := UnixNanos(name); ok {
			t.Errorf("UnixNanos(%q) = %d, true; want false", name, got)
		}
	}
}
