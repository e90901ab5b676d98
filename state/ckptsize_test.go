package state

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// fillTable puts n keys (8-byte big-endian ids scrambled to spread them over
// the B+tree) with 32-byte values and checkpoints them.
func fillTable(t testing.TB, s Store, tb Table, n int) {
	t.Helper()
	val := make([]byte, 32)
	for i := range n {
		if err := tb.Put(benchKey(i), val); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, s, nil)
}

func benchKey(i int) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(i)*0x9E3779B97F4A7C15)
}

// TestCheckpointBytesProportional: among 100k keys (10k under the race
// detector), a checkpoint of n changed keys writes about one page per
// changed key (a leaf each, plus the branches above them), however many
// keys the table holds.
func TestCheckpointBytesProportional(t *testing.T) {
	const total = 100_000 / raceDiv
	db := openDB(t, "", 4<<20, nil)
	tb := mustTable(t, db, "op1.window", 0)
	fillTable(t, db, tb, total)
	page := int64(db.bolt.Info().PageSize)
	r := rand.New(rand.NewPCG(1, 2))
	var prev int64
	for _, n := range []int{10, 100, total / 10} {
		for range n {
			if err := tb.Put(benchKey(r.IntN(total)), []byte(fmt.Sprint("changed", r.Int()))); err != nil {
				t.Fatal(err)
			}
		}
		st, err := db.Checkpoint(nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%6d changed keys of %d: %8d bytes written (%.1f pages per key)", n, total, st.BytesWritten, float64(st.BytesWritten)/float64(page)/float64(n))
		if limit := (2*int64(n) + 16) * page; st.BytesWritten > limit {
			t.Errorf("%d changed keys: %d bytes written, want at most %d", n, st.BytesWritten, limit)
		}
		if st.BytesWritten <= prev {
			t.Errorf("%d changed keys: %d bytes written, no more than for fewer keys (%d)", n, st.BytesWritten, prev)
		}
		prev = st.BytesWritten
	}
	// Nothing changed: the meta page, the checkpoint record and little else.
	st, err := db.Checkpoint(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesWritten > 16*page {
		t.Errorf("empty checkpoint wrote %d bytes, want at most %d", st.BytesWritten, 16*page)
	}
}
