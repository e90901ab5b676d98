package state

import (
	"encoding/binary"
	"slices"
	"strings"
)

// sortItem is a key's first 8 bytes after the shared prefix and its entry.
type sortItem struct {
	pfx uint64
	i   int32
}

// scratch holds the arrays a checkpoint needs, kept from one checkpoint to
// the next so that a steady stream of changed keys does not allocate them
// every time. Only the holder of the checkpoint semaphore (one Pending) uses
// it.
type scratch struct {
	snaps      []snap // carved into the pending tables' entries
	order      []int32
	items, tmp []sortItem
}

// grow returns s with length n, reusing its array when it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// release keeps the arrays for the next checkpoint unless they are much
// larger than the n entries this one needed (a burst), and drops their
// references to entries and values.
func (sc *scratch) release(n int) {
	clear(sc.snaps[:min(n, len(sc.snaps))])
	if keep := max(1<<16, 2*n); cap(sc.snaps) > keep {
		*sc = scratch{}
	}
}

// sort orders the entries by key: a radix sort on 8 key bytes taken after
// the prefix all keys share, then a comparison sort of the rare runs that
// tie on those bytes. About 10x faster than a comparison sort of 100k keys.
// pt.order is carved from sc.order at offset off; sc's items are reused.
func (pt *pendTable) sort(sc *scratch, off int) {
	ents := pt.ents
	// Earlier tables keep their order slices if the array is replaced.
	sc.order = grow(sc.order, max(len(sc.order), off+len(ents)))
	pt.order = sc.order[off : off+len(ents) : off+len(ents)]
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
	sc.items = grow(sc.items, len(ents))
	sc.tmp = grow(sc.tmp, len(ents))
	items, tmp := sc.items, sc.tmp
	for i := range ents {
		items[i] = sortItem{prefix(ents[i].key[lcp:]), int32(i)}
	}
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
			slices.SortFunc(items[lo:hi], func(a, b sortItem) int { return strings.Compare(ents[a.i].key, ents[b.i].key) })
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
