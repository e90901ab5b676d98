package state

import (
	"fmt"
	"testing"
)

// TestDirtyOverBudget: dirty entries are never evicted; past half of the
// budget the DB signals pressure, past the budget it reports it, and the
// next checkpoint brings the cache back within budget.
func TestDirtyOverBudget(t *testing.T) {
	const budget = 4 << 10
	db := openDB(t, "", budget, nil)
	tb := mustTable(t, db, "t", 0)
	for i := range 100 {
		if err := tb.Put([]byte(fmt.Sprint("key", i)), make([]byte, 40)); err != nil {
			t.Fatal(err)
		}
	}
	st := db.Stats()
	if !st.OverBudget || st.DirtyBytes != st.CacheBytes || st.DirtyEntries != 100 {
		t.Errorf("Stats = %+v, want over budget with 100 dirty entries making up the cache", st)
	}
	select {
	case <-db.Pressure():
	default:
		t.Error("no pressure signal with dirty bytes over the budget")
	}
	for i := range 100 { // all still readable: nothing dirty was evicted
		if _, ok := get(t, tb, fmt.Sprint("key", i)); !ok {
			t.Fatalf("key%d lost before the checkpoint", i)
		}
	}
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	st = db.Stats()
	if st.OverBudget || st.CacheBytes > budget || st.DirtyEntries != 0 || st.Evictions == 0 {
		t.Errorf("after checkpoint Stats = %+v, want within budget, clean, with evictions", st)
	}
	for i := range 100 {
		if _, ok := get(t, tb, fmt.Sprint("key", i)); !ok {
			t.Fatalf("key%d not read back after eviction", i)
		}
	}
}

// TestHotPathAllocs: Get and Put of cached keys do not allocate.
func TestHotPathAllocs(t *testing.T) {
	db := openDB(t, "", 1<<20, nil)
	tb := mustTable(t, db, "t", 0)
	key, val := []byte("sensor-1"), make([]byte, 48)
	_ = tb.Put(key, val)
	dst := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(1000, func() { dst, _, _ = tb.Get(key, dst[:0]) }); n != 0 {
		t.Errorf("Get hit: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = tb.Put(key, val) }); n != 0 {
		t.Errorf("Put hit: %v allocs, want 0", n)
	}
}
