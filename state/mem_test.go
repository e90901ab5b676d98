package state

import (
	"encoding/binary"
	"runtime"
	"testing"
)

// memKeys is the number of distinct keys of TestManyKeysMemory; the race
// detector's tenfold slowdown gets a tenth of them (race_test.go).
const memKeys = 1_000_000 / raceDiv

// TestManyKeysMemory counts per key over memKeys distinct keys, as an
// aggregate operator would (Get, then Put), under a 2 MiB cache budget,
// checkpointing whenever the DB signals pressure. The live heap, sampled
// after a GC, must stay within the budget plus 2 MiB, and every count must
// be right, read back from the file.
func TestManyKeysMemory(t *testing.T) {
	const budget = 2 << 20
	// bbolt's transaction state, snapshot and sort buffers. Measured: about
	// 2 MiB before values carried a checksum; the 4 bytes it adds to each
	// stored value (8-byte values here) make the file and bbolt's state
	// per page larger, about 80 KiB more at the peak (the same test with
	// 4-byte values peaks where it did before).
	const slack = 2<<20 + 256<<10
	db := openDB(t, "", budget, nil)
	tb := mustTable(t, db, "op1.count", 0)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	// Two GCs: bbolt keeps the page buffers of the last commit in a
	// sync.Pool, which survives one GC. Those buffers are the transient cost
	// of a commit (about one page per changed key, see the package doc) and
	// are reported apart.
	var peak, peakPool uint64
	sample := func() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > base {
			peakPool = max(peakPool, ms.HeapAlloc-base)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > base {
			peak = max(peak, ms.HeapAlloc-base)
		}
	}
	checkpoints := 0
	incr := func(i int) {
		k := binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(i))
		var buf [8]byte
		v, ok, err := tb.Get(k, buf[:0])
		if err != nil {
			t.Fatal(err)
		}
		n := uint64(0)
		if ok {
			n = binary.BigEndian.Uint64(v)
		}
		if err := tb.Put(k, binary.BigEndian.AppendUint64(buf[:0], n+1)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-db.Pressure():
			if _, err := db.Checkpoint(nil); err != nil {
				t.Fatal(err)
			}
			checkpoints++
		default:
		}
	}
	// Every key once, in order, then the keys i%10 == 3 again in a
	// scrambled order (7919 is prime to memKeys/10, so j*7919 mod
	// memKeys/10 visits each once).
	for i := range memKeys {
		incr(i)
		if i%(memKeys/10) == 0 {
			sample()
		}
	}
	const tenth = memKeys / 10
	for j := range tenth {
		incr((j*7919)%tenth*10 + 3)
		if j%(tenth/5) == 0 {
			sample()
		}
	}
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	sample()
	st := db.Stats()
	t.Logf("%d keys, budget %d: peak live heap +%d bytes (+%d with the pooled pages of the last commit), %d checkpoints, %d evictions, cache %d bytes",
		memKeys, budget, peak, peakPool, checkpoints, st.Evictions, st.CacheBytes)
	if peak > budget+slack {
		t.Errorf("live heap grew by %d bytes, want at most budget %d + %d", peak, budget, slack)
	}
	if st.CacheBytes > budget {
		t.Errorf("clean cache holds %d bytes, budget %d", st.CacheBytes, budget)
	}
	if n, err := tb.Len(); err != nil || n != memKeys {
		t.Errorf("Len = %d, %v; want %d", n, err, memKeys)
	}
	seen := 0
	if err := tb.Range(func(k, v []byte) bool {
		i, n := int(binary.BigEndian.Uint64(k)), binary.BigEndian.Uint64(v)
		want := uint64(1)
		if i%10 == 3 {
			want = 2
		}
		if i != seen || n != want {
			t.Fatalf("Range: key %d = %d, want key %d = %d", i, n, seen, want)
		}
		seen++
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if seen != memKeys {
		t.Errorf("Range saw %d keys, want %d", seen, memKeys)
	}
}
