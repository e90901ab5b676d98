package state

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable virtual clock for Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// opts returns Options with the clock and a cache budget.
func (c *clock) opts(cache int64) Options { return Options{CacheBytes: cache, Now: c.Now} }

func openDB(t testing.TB, path string, budget int64, now func() time.Time) *DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "state.db")
	}
	db, err := Open(path, Options{CacheBytes: budget, Now: now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func mustTable(t testing.TB, db *DB, name string, ttl time.Duration) Table {
	t.Helper()
	tb, err := db.Table(name, ttl)
	if err != nil {
		t.Fatalf("Table(%q): %v", name, err)
	}
	return tb
}

func get(t testing.TB, tb Table, k string) (string, bool) {
	t.Helper()
	v, ok, err := tb.Get([]byte(k), nil)
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	return string(v), ok
}

func dump(t testing.TB, tb Table) map[string]string {
	t.Helper()
	m := map[string]string{}
	var prev []byte
	if err := tb.Range(func(k, v []byte) bool {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			t.Fatalf("Range: key %q after %q: not in order", k, prev)
		}
		prev = bytes.Clone(k)
		m[string(k)] = string(v)
		return true
	}); err != nil {
		t.Fatalf("Range: %v", err)
	}
	return m
}

func TestTableBasics(t *testing.T) {
	tests := []struct {
		name   string
		budget int64
		ckpt   bool // checkpoint between the writes and the reads
		reopen bool // close and reopen before the reads
	}{
		{"large cache", 1 << 20, false, false},
		{"large cache checkpointed", 1 << 20, true, false},
		{"tiny cache checkpointed", 300, true, false},
		{"tiny cache reopened", 300, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			db := openDB(t, path, tc.budget, nil)
			tb := mustTable(t, db, "op1.window", 0)
			want := map[string]string{}
			for i := range 50 {
				k, v := fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i*i)
				if err := tb.Put([]byte(k), []byte(v)); err != nil {
					t.Fatal(err)
				}
				want[k] = v
			}
			for i := 0; i < 50; i += 3 {
				k := fmt.Sprintf("k%03d", i)
				if err := tb.Delete([]byte(k)); err != nil {
					t.Fatal(err)
				}
				delete(want, k)
			}
			if tc.ckpt {
				if _, err := db.Checkpoint(nil); err != nil {
					t.Fatal(err)
				}
			}
			if tc.reopen {
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				db = openDB(t, path, tc.budget, nil)
				tb = mustTable(t, db, "op1.window", 0)
			}
			for i := range 50 {
				k := fmt.Sprintf("k%03d", i)
				v, ok := get(t, tb, k)
				wv, wok := want[k]
				if ok != wok || v != wv {
					t.Errorf("Get(%q) = %q, %v; want %q, %v", k, v, ok, wv, wok)
				}
			}
			if got := dump(t, tb); !mapsEqual(got, want) {
				t.Errorf("Range = %v, want %v", got, want)
			}
			if n, err := tb.Len(); err != nil || n != len(want) {
				t.Errorf("Len = %d, %v; want %d", n, err, len(want))
			}
			if st := db.Stats(); tc.ckpt && st.CacheBytes > tc.budget {
				t.Errorf("clean cache uses %d bytes, over the budget %d", st.CacheBytes, tc.budget)
			}
			if err := db.Check(); err != nil {
				t.Error(err)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestGetAppendsToDst(t *testing.T) {
	db := openDB(t, "", 0, nil)
	tb := mustTable(t, db, "t", 0)
	if err := tb.Put([]byte("k"), []byte("value")); err != nil {
		t.Fatal(err)
	}
	dst := append(make([]byte, 0, 64), "prefix:"...)
	got, ok, err := tb.Get([]byte("k"), dst)
	if err != nil || !ok || string(got) != "prefix:value" {
		t.Fatalf("Get = %q, %v, %v; want %q, true, nil", got, ok, err, "prefix:value")
	}
	if &got[0] != &dst[:1][0] {
		t.Error("Get reallocated dst although it had room")
	}
	// The cache must not alias the caller's slices.
	val := []byte("abc")
	_ = tb.Put([]byte("k2"), val)
	val[0] = 'X'
	if v, _ := get(t, tb, "k2"); v != "abc" {
		t.Errorf("Get after caller modified its slice = %q, want %q", v, "abc")
	}
}

func TestErrors(t *testing.T) {
	db := openDB(t, "", 0, nil)
	tb := mustTable(t, db, "t", time.Minute)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"empty key", tb.Put(nil, []byte("v")), ErrKeySize},
		{"long key", tb.Put(make([]byte, MaxKeySize+1), nil), ErrKeySize},
		{"long value", tb.Put([]byte("k"), make([]byte, MaxValueSize+1)), ErrValueSize},
		{"bad name", func() error { _, err := db.Table("a/b", 0); return err }(), ErrTableName},
		{"empty name", func() error { _, err := db.Table("", 0); return err }(), ErrTableName},
		{"ttl mismatch", func() error { _, err := db.Table("t", time.Hour); return err }(), ErrTableTTL},
		{"meta key", func() error { _, err := db.Checkpoint(map[string][]byte{"": nil}); return err }(), ErrKeySize},
	}
	for _, tc := range tests {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := tb.Put([]byte("k"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	if _, _, err := tb.Get([]byte("k"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if _, err := db.Checkpoint(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Checkpoint after Close = %v, want ErrClosed", err)
	}
	if err := tb.Range(func(k, v []byte) bool { return true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Range after Close = %v, want ErrClosed", err)
	}
}

// TestRangeCallsBack ranges over more keys than one chunk while fn reads
// (missing the tiny cache), writes and deletes, and a checkpoint commits in
// between: every key is visited once, in order, and the changes hold.
func TestRangeCallsBack(t *testing.T) {
	db := openDB(t, "", 2<<10, nil)
	tb := mustTable(t, db, "timers", 0)
	const n = 3*rangeChunk + 17
	for i := range n {
		_ = tb.Put([]byte(fmt.Sprintf("k%05d", i)), []byte("v"))
	}
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	_ = tb.Put([]byte("k00003"), []byte("dirty")) // overlay over the file
	_ = tb.Delete([]byte("k00004"))
	i := 0
	if err := tb.Range(func(k, v []byte) bool {
		if i == 4 {
			i++ // k00004 was deleted before Range
		}
		if want := fmt.Sprintf("k%05d", i); string(k) != want {
			t.Fatalf("Range visited %q, want %q", k, want)
		}
		if i == 3 && string(v) != "dirty" {
			t.Errorf("Range: k00003 = %q, want the cached %q", v, "dirty")
		}
		if _, _, err := tb.Get([]byte(fmt.Sprintf("k%05d", n-1-i)), nil); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			_ = tb.Delete(k)
		}
		if i == n/2 {
			if _, err := db.Checkpoint(nil); err != nil {
				t.Fatal(err)
			}
		}
		i++
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Errorf("Range visited up to %d, want %d", i, n)
	}
	if got, _ := tb.Len(); got != n/2 {
		t.Errorf("Len after deleting every even key = %d, want %d", got, n/2)
	}
}
