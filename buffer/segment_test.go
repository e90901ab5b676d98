package buffer

import (
	"testing"

	"pgregory.net/rapid"
)

// TestCountOnce: countOnce counts each sequence once however the spans
// overlap, and keeps its spans sorted and disjoint; checked against a set.
func TestCountOnce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s segment
		seen := map[uint64]bool{}
		for i := range rapid.IntRange(1, 30).Draw(t, "spans") {
			from := rapid.Uint64Range(0, 60).Draw(t, "from")
			to := from + rapid.Uint64Range(0, 15).Draw(t, "len")
			want := uint64(0)
			for q := from; q < to; q++ {
				if !seen[q] {
					seen[q] = true
					want++
				}
			}
			if got := s.countOnce(seqSpan{from, to}); got != want {
				t.Fatalf("span %d [%d,%d): got %d new, want %d (spans %v)", i, from, to, got, want, s.counted)
			}
			for j := 1; j < len(s.counted); j++ {
				if s.counted[j-1].To >= s.counted[j].From {
					t.Fatalf("spans not sorted and disjoint: %v", s.counted)
				}
			}
		}
	})
}
