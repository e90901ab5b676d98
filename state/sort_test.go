package state

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestSortOrder: pendTable.sort returns a permutation of the entries in key
// order, for keys of any length with long shared prefixes.
// The scratch arrays are shared by the runs, as by successive checkpoints.
func TestSortOrder(t *testing.T) {
	sc := &scratch{}
	rapid.Check(t, func(rt *rapid.T) {
		prefix := rapid.StringN(0, 12, -1).Draw(rt, "prefix")
		tails := rapid.SliceOfDistinct(rapid.StringOfN(rapid.RuneFrom([]rune{0, 1, 2, 255}), 0, 10, -1), func(s string) string { return s }).Draw(rt, "tails")
		pt := &pendTable{}
		for _, tail := range tails {
			pt.ents = append(pt.ents, snap{key: prefix + tail})
		}
		pt.sort(sc, rapid.IntRange(0, 3).Draw(rt, "offset"))
		var got, want []string
		for _, i := range pt.order {
			got = append(got, pt.ents[i].key)
		}
		for _, s := range pt.ents {
			want = append(want, s.key)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			rt.Fatalf("sorted %q, want %q", got, want)
		}
	})
}
