package state

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestTTL(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 1<<20, clk.Now)
	tb := mustTable(t, db, "op2.dedup", time.Minute)
	plain := mustTable(t, db, "op2.plain", 0)
	for i := range 10 {
		k := []byte(fmt.Sprintf("old%d", i))
		_ = tb.Put(k, []byte("x"))
		_ = plain.Put(k, []byte("x"))
	}
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(40 * time.Second)
	for i := range 5 {
		_ = tb.Put([]byte(fmt.Sprintf("new%d", i)), []byte("y"))
	}
	_ = tb.Put([]byte("old0"), []byte("rewritten")) // refreshes its write time
	clk.Advance(20 * time.Second)                   // old* are now 60 s old: expired

	if _, ok := get(t, tb, "old1"); ok {
		t.Error("Get(old1) found a key past its TTL")
	}
	if v, ok := get(t, tb, "old0"); !ok || v != "rewritten" {
		t.Errorf("Get(old0) = %q, %v; want rewritten, true", v, ok)
	}
	if v, ok := get(t, plain, "old1"); !ok || v != "x" {
		t.Errorf("table without TTL: Get(old1) = %q, %v; want x, true", v, ok)
	}
	if got := len(dump(t, tb)); got != 6 {
		t.Errorf("Range visits %d keys, want 6 (old0, new0-4)", got)
	}
	st, err := db.Checkpoint(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 9 {
		t.Errorf("checkpoint expired %d keys, want 9", st.Expired)
	}
	if n, _ := tb.Len(); n != 6 {
		t.Errorf("Len after expiry = %d, want 6", n)
	}
	if n, _ := plain.Len(); n != 10 {
		t.Errorf("Len of table without TTL = %d, want 10", n)
	}
	// The expiry is in the file: even with the clock moved back, the keys
	// stay gone, after a reopen too.
	clk.Advance(-time.Hour)
	if _, ok := get(t, tb, "old1"); ok {
		t.Error("Get(old1) after expiry and clock moved back: found")
	}
	_ = db.Close()
	db = openDB(t, path, 1<<20, clk.Now)
	tb = mustTable(t, db, "op2.dedup", time.Minute)
	if got := len(dump(t, tb)); got != 6 {
		t.Errorf("after reopen Range visits %d keys, want 6", got)
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
}

// TestTTLAdded reopens a table that had no TTL with one: its keys are
// indexed by their stored write times and expire.
func TestTTLAdded(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 1<<20, clk.Now)
	tb := mustTable(t, db, "t", 0)
	_ = tb.Put([]byte("a"), []byte("1"))
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	_ = tb.Put([]byte("b"), []byte("2"))
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	db = openDB(t, path, 1<<20, clk.Now)
	tb = mustTable(t, db, "t", 30*time.Second)
	st, err := db.Checkpoint(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 1 {
		t.Errorf("expired %d keys, want 1", st.Expired)
	}
	if got := dump(t, tb); !mapsEqual(got, map[string]string{"b": "2"}) {
		t.Errorf("Range = %v, want b:2", got)
	}
}

// TestTTLStateClock checks that the TTL clock counts the time the DB is
// open: reopening a day later by the wall clock (NTP setting a board's
// clock while it was down) or a day earlier expires nothing early and
// keeps nothing late.
func TestTTLStateClock(t *testing.T) {
	for _, jump := range []time.Duration{24 * time.Hour, -24 * time.Hour} {
		t.Run(jump.String(), func(t *testing.T) {
			clk := newClock()
			path := filepath.Join(t.TempDir(), "state.db")
			db, err := Open(path, Options{Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			tb := mustTable(t, db, "op.dedup", time.Minute)
			_ = tb.Put([]byte("k"), []byte("v"))
			clk.Advance(10 * time.Second)
			st, err := db.Checkpoint(nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = db.Close()

			clk.Advance(jump)
			db = openDB(t, path, 1<<20, clk.Now)
			if info, _ := db.LastCheckpoint(); !info.Time.Equal(st.Time) {
				t.Errorf("checkpoint time: got %v, want %v", info.Time, st.Time)
			}
			tb = mustTable(t, db, "op.dedup", time.Minute)
			clk.Advance(49 * time.Second) // 59 s on the state clock since the write
			if _, ok := get(t, tb, "k"); !ok {
				t.Fatal("Get(k) 59 s after its write, wall clock jumped: absent, want present")
			}
			if st, err := db.Checkpoint(nil); err != nil || st.Expired != 0 {
				t.Fatalf("checkpoint: %d expired, err %v; want 0", st.Expired, err)
			}
			clk.Advance(time.Second)
			if _, ok := get(t, tb, "k"); ok {
				t.Error("Get(k) 60 s after its write: present, want expired")
			}
			if st, err := db.Checkpoint(nil); err != nil || st.Expired != 1 {
				t.Errorf("checkpoint: %d expired, err %v; want 1", st.Expired, err)
			}
		})
	}
}
