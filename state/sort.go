package state

import (
	"encoding/binary"
	"slices"
	"strings"
)

// sort orders the entries by key: a radix sort on 8 key bytes taken after
// the prefix all keys share, then a comparison sort of the rare runs that
// tie on those bytes. About 10x faster than a comparison sort of 100k keys.
func (pt *pendTable) sort() {
	ents := pt.ents
	pt.order = make([]int32, len(ents))
	if len(ents) < 2 {
		for i := range pt.order {
			pt.order[i] = int32(i)
		}
		return
	}
	lcp := len(ents[0].key)
	for _, s := range ents[1:] {
		lcp = min(lcp, commonPrefix(ents[0].key, s.key))
	}
	type item struct {
		pfx uint64
		i   int32
	}
	items := make([]item, len(ents))
	for i := range ents {
		items[i] = item{prefix(ents[i].key[lcp:]), int32(i)}
	}
	tmp := make([]item, len(items))
	for shift := 0; shift < 64; shift += 8 {
		var count [257]int
		for _, it := range items {
			count[int(byte(it.pfx>>shift))+1]++
		}
		if count[int(byte(items[0].pfx>>shift))+1] == len(items) {
			continue // every item has the same byte here
		}
		for b := 1; b < 257; b++ {
			count[b] += count[b-1]
		}
		for _, it := range items {
			b := byte(it.pfx >> shift)
			tmp[count[b]] = it
			count[b]++
		}
		items, tmp = tmp, items
	}
	for lo := 0; lo < len(items); {
		hi := lo + 1
		for hi < len(items) && items[hi].pfx == items[lo].pfx {
			hi++
		}
		if hi-lo > 1 {
			slices.SortFunc(items[lo:hi], func(a, b item) int { return strings.Compare(ents[a.i].key, ents[b.i].key) })
		}
		lo = hi
	}
	for i, it := range items {
		pt.order[i] = it.i
	}
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// prefix returns the first 8 bytes of k as a big-endian number, zero-padded.
func prefix(k string) uint64 {
	var b [8]byte
	copy(b[:], k)
	return binary.BigEndian.Uint64(b[:])
}
