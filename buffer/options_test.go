package buffer

import (
	"errors"
	"testing"
)

// TestValidateAgreesWithOpen checks that Options.Validate refuses what Open
// refuses, naming the option, and accepts what Open accepts.
func TestValidateAgreesWithOpen(t *testing.T) {
	tests := []struct {
		name  string
		o     Options
		field string // "" when valid
	}{
		{"defaults", Options{}, ""},
		{"max twice segment", Options{MaxBytes: 2 << 20, SegmentBytes: 1 << 20}, ""},
		{"max below twice segment", Options{MaxBytes: 2<<20 - 1, SegmentBytes: 1 << 20}, "max_bytes"},
		{"max below default segment", Options{MaxBytes: 8 << 20, SegmentBytes: DefaultSegmentBytes}, "max_bytes"},
		{"memory counts", Options{Kind: Memory, MaxBytes: 4 << 20, SegmentBytes: 1 << 20, MemoryBytes: 4 << 20}, "max_bytes"},
		{"memory ignored for disk", Options{Kind: Disk, MaxBytes: 2 << 20, SegmentBytes: 1 << 20, MemoryBytes: 4 << 20}, ""},
		{"segment too small", Options{SegmentBytes: 10}, "segment_bytes"},
		{"bad kind", Options{Kind: "tape"}, "kind"},
		{"bad overflow", Options{Overflow: "spill"}, "overflow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			l, openErr := Open(t.TempDir(), tt.o)
			if openErr == nil {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.field == "" {
				if err != nil || openErr != nil {
					t.Fatalf("got Validate %v, Open %v, want both nil", err, openErr)
				}
				return
			}
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Field != tt.field || !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("got Validate %v, want an *OptionError for %s", err, tt.field)
			}
			if !errors.Is(openErr, ErrInvalidOptions) {
				t.Errorf("got Open %v, want ErrInvalidOptions", openErr)
			}
		})
	}
}
