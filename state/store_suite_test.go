package state

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The shared suite: every Store implementation must pass the tests of this
// file, which hold it to the contract of Store, Table and Pending. What
// differs between stores is said by storeKind, not by the tests.

// storeKind describes a Store implementation for the suite.
type storeKind struct {
	name string
	// durable: after a reopen the store holds the last committed
	// checkpoint (state and metadata); otherwise it starts empty with none.
	durable bool
	// hardBudget: a Put that would take the store over its budget fails
	// with ErrFull; otherwise the changes since the last checkpoint may
	// exceed it, and a checkpoint brings the store back under it.
	hardBudget bool
	// open opens the store kept in dir (the same dir reopens it).
	open func(t testing.TB, dir string, o Options) Store
}

var storeKinds = []storeKind{
	{name: "bbolt", durable: true, open: func(t testing.TB, dir string, o Options) Store {
		t.Helper()
		db, err := Open(filepath.Join(dir, "state.db"), o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}},
	{name: "memory", hardBudget: true, open: func(t testing.TB, _ string, o Options) Store {
		t.Helper()
		m, err := NewMemory(o)
		if err != nil {
			t.Fatalf("NewMemory: %v", err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}},
}

// eachStore runs f once per store kind: every kind must pass the suite.
func eachStore(t *testing.T, f func(t *testing.T, k storeKind)) {
	t.Helper()
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

func table(t testing.TB, s Store, name string, ttl time.Duration) Table {
	t.Helper()
	tb, err := s.Table(name, ttl)
	if err != nil {
		t.Fatalf("Table(%q): %v", name, err)
	}
	return tb
}

func put(t testing.TB, tb Table, k, v string) {
	t.Helper()
	if err := tb.Put([]byte(k), []byte(v)); err != nil {
		t.Fatalf("Put(%q): %v", k, err)
	}
}

func commit(t testing.TB, s Store, meta map[string][]byte) CheckpointStats {
	t.Helper()
	p, err := s.Prepare(meta)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	st, err := p.Commit()
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return st
}

func TestSuiteGetPutDelete(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t, t.TempDir(), Options{})
		tb := table(t, s, "op1.count", 0)
		if tb.Name() != "op1.count" || tb.TTL() != 0 {
			t.Errorf("Name, TTL = %q, %v; want op1.count, 0", tb.Name(), tb.TTL())
		}
		if v, ok := get(t, tb, "a"); ok {
			t.Errorf("Get of a new key = %q, true; want absent", v)
		}
		put(t, tb, "a", "1")
		put(t, tb, "b", "")
		put(t, tb, "a", "one, longer than before")
		if v, ok := get(t, tb, "a"); !ok || v != "one, longer than before" {
			t.Errorf("Get(a) = %q, %v; want the last value", v, ok)
		}
		if v, ok := get(t, tb, "b"); !ok || v != "" {
			t.Errorf("Get(b) = %q, %v; want the empty value, present", v, ok)
		}
		if err := tb.Delete([]byte("a")); err != nil {
			t.Fatal(err)
		}
		if err := tb.Delete([]byte("never")); err != nil {
			t.Errorf("Delete of an absent key = %v, want nil", err)
		}
		if _, ok := get(t, tb, "a"); ok {
			t.Error("Get after Delete found the key")
		}
		if n, err := tb.Len(); err != nil || n != 1 {
			t.Errorf("Len = %d, %v; want 1", n, err)
		}

		// Get appends to dst and does not reallocate it when it has room.
		dst := append(make([]byte, 0, 64), "prefix:"...)
		put(t, tb, "c", "value")
		got, ok, err := tb.Get([]byte("c"), dst)
		if err != nil || !ok || string(got) != "prefix:value" {
			t.Fatalf("Get = %q, %v, %v; want %q, true, nil", got, ok, err, "prefix:value")
		}
		if &got[0] != &dst[:1][0] {
			t.Error("Get reallocated dst although it had room")
		}
		// Neither Put nor Get alias the caller's slices.
		key, val := []byte("d"), []byte("abc")
		if err := tb.Put(key, val); err != nil {
			t.Fatal(err)
		}
		key[0], val[0] = 'X', 'X'
		if v, _ := get(t, tb, "d"); v != "abc" {
			t.Errorf("Get after the caller changed its slices = %q, want abc", v)
		}
		got, _, _ = tb.Get([]byte("d"), nil)
		got[0] = 'Y'
		if v, _ := get(t, tb, "d"); v != "abc" {
			t.Errorf("Get after the caller changed a returned slice = %q, want abc", v)
		}

		// A second table is apart; the same name is the same table.
		other := table(t, s, "op2.count", 0)
		if _, ok := get(t, other, "c"); ok {
			t.Error("a key of op1.count is visible in op2.count")
		}
		put(t, table(t, s, "op2.count", 0), "z", "26")
		if v, _ := get(t, other, "z"); v != "26" {
			t.Errorf("Table(same name) is another table: Get(z) = %q", v)
		}
		if names, err := s.Tables(); err != nil || !slices.Equal(names, []string{"op1.count", "op2.count"}) {
			t.Errorf("Tables = %v, %v; want [op1.count op2.count]", names, err)
		}
	})
}

func TestSuiteErrors(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t, t.TempDir(), Options{})
		tb := table(t, s, "t", time.Minute)
		tests := []struct {
			name string
			err  error
			want error
		}{
			{"empty key", tb.Put(nil, []byte("v")), ErrKeySize},
			{"long key", tb.Put(make([]byte, MaxKeySize+1), nil), ErrKeySize},
			{"get empty key", func() error { _, _, err := tb.Get(nil, nil); return err }(), ErrKeySize},
			{"delete long key", tb.Delete(make([]byte, MaxKeySize+1)), ErrKeySize},
			{"long value", tb.Put([]byte("k"), make([]byte, MaxValueSize+1)), ErrValueSize},
			{"bad name", func() error { _, err := s.Table("a/b", 0); return err }(), ErrTableName},
			{"empty name", func() error { _, err := s.Table("", 0); return err }(), ErrTableName},
			{"drop bad name", s.DropTable("a b"), ErrTableName},
			{"ttl mismatch", func() error { _, err := s.Table("t", time.Hour); return err }(), ErrTableTTL},
			{"meta key", func() error { _, err := s.Prepare(map[string][]byte{"": nil}); return err }(), ErrKeySize},
			{"meta value", func() error {
				_, err := s.Prepare(map[string][]byte{"k": make([]byte, MaxValueSize+1)})
				return err
			}(), ErrValueSize},
		}
		for _, tc := range tests {
			if !errors.Is(tc.err, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
			}
		}
		if _, err := s.Table("t2", -time.Second); err == nil {
			t.Error("Table with a negative ttl: got nil error")
		}
		if n, _ := tb.Len(); n != 0 {
			t.Errorf("Len after refused writes = %d, want 0", n)
		}
	})
}

func TestSuiteClosed(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t, t.TempDir(), Options{})
		tb := table(t, s, "t", 0)
		put(t, tb, "k", "v")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		calls := map[string]error{
			"Put":    tb.Put([]byte("k"), nil),
			"Get":    func() error { _, _, err := tb.Get([]byte("k"), nil); return err }(),
			"Delete": tb.Delete([]byte("k")),
			"Range":  tb.Range(func(k, v []byte) bool { return true }),
			"Len":    func() error { _, err := tb.Len(); return err }(),
			"Table":  func() error { _, err := s.Table("t", 0); return err }(),
			"Tables": func() error { _, err := s.Tables(); return err }(),
			"Drop":   s.DropTable("t"),
			"Prepare": func() error {
				_, err := s.Prepare(nil)
				return err
			}(),
			"LastCheckpoint": func() error { _, err := s.LastCheckpoint(); return err }(),
		}
		for name, err := range calls {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close = %v, want ErrClosed", name, err)
			}
		}
		_ = s.Stats() // works after Close
		if err := s.Damaged(); err != nil {
			t.Errorf("Damaged after Close = %v, want nil", err)
		}
	})
}

// TestSuiteRange ranges over more keys than one chunk of either store
// while fn reads, writes and deletes, and a checkpoint commits in between:
// every key is visited once, in byte order, and the changes hold.
func TestSuiteRange(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t, t.TempDir(), Options{})
		tb := table(t, s, "timers", 0)
		const n = 3*rangeChunk + 17
		for i := range n {
			put(t, tb, fmt.Sprintf("k%05d", i), "v")
		}
		commit(t, s, nil)
		put(t, tb, "k00003", "changed")
		if err := tb.Delete([]byte("k00004")); err != nil {
			t.Fatal(err)
		}
		i := 0
		if err := tb.Range(func(k, v []byte) bool {
			if i == 4 {
				i++ // deleted before Range
			}
			if want := fmt.Sprintf("k%05d", i); string(k) != want {
				t.Fatalf("Range visited %q, want %q", k, want)
			}
			if want := map[bool]string{true: "changed", false: "v"}[i == 3]; string(v) != want {
				t.Errorf("Range: %s = %q, want %q", k, v, want)
			}
			if _, _, err := tb.Get([]byte(fmt.Sprintf("k%05d", n-1-i)), nil); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				if err := tb.Delete(k); err != nil {
					t.Fatal(err)
				}
			}
			if i == n/2 {
				commit(t, s, nil)
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
		// fn returning false stops Range.
		visits := 0
		if err := tb.Range(func(k, v []byte) bool { visits++; return visits < 3 }); err != nil || visits != 3 {
			t.Errorf("Range stopped after %d visits, %v; want 3", visits, err)
		}
		// An empty table is visited without a call.
		if err := table(t, s, "empty", 0).Range(func(k, v []byte) bool {
			t.Errorf("Range of an empty table visited %q", k)
			return true
		}); err != nil {
			t.Error(err)
		}
	})
}

// TestSuiteTTL: a key not written for the TTL is absent to Get and Range
// at once, a write refreshes it, the checkpoint after removes it (counted
// as expired), and a table without a TTL keeps its keys.
func TestSuiteTTL(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		clk := newClock()
		s := k.open(t, t.TempDir(), Options{Now: clk.Now})
		tb := table(t, s, "op2.dedup", time.Minute)
		plain := table(t, s, "op2.plain", 0)
		if tb.TTL() != time.Minute {
			t.Errorf("TTL = %v, want 1m", tb.TTL())
		}
		for i := range 10 {
			put(t, tb, fmt.Sprintf("old%d", i), "x")
			put(t, plain, fmt.Sprintf("old%d", i), "x")
		}
		commit(t, s, nil)
		clk.Advance(40 * time.Second)
		for i := range 5 {
			put(t, tb, fmt.Sprintf("new%d", i), "y")
		}
		put(t, tb, "old0", "rewritten") // refreshes its write time
		clk.Advance(20 * time.Second)   // old1..old9 are 60 s old: expired
		if _, ok := get(t, tb, "old1"); ok {
			t.Error("Get(old1) found a key past its TTL")
		}
		if v, ok := get(t, tb, "old0"); !ok || v != "rewritten" {
			t.Errorf("Get(old0) = %q, %v; want rewritten, true", v, ok)
		}
		if v, ok := get(t, plain, "old1"); !ok || v != "x" {
			t.Errorf("table without TTL: Get(old1) = %q, %v; want x, true", v, ok)
		}
		if got := slices.Sorted(maps.Keys(dump(t, tb))); !slices.Equal(got, []string{"new0", "new1", "new2", "new3", "new4", "old0"}) {
			t.Errorf("Range visits %v, want old0 and new0-4", got)
		}
		before := s.Stats().CacheBytes
		st := commit(t, s, nil)
		if st.Expired != 8 && st.Expired != 9 { // old1, expired at Get, may be gone already
			t.Errorf("checkpoint expired %d keys, want 9 (8 if Get removed old1)", st.Expired)
		}
		if n, _ := tb.Len(); n != 6 {
			t.Errorf("Len after expiry = %d, want 6", n)
		}
		if n, _ := plain.Len(); n != 10 {
			t.Errorf("Len of the table without TTL = %d, want 10", n)
		}
		if after := s.Stats().CacheBytes; after >= before {
			t.Errorf("%d bytes in memory after the expiring checkpoint, %d before: want fewer", after, before)
		}
		// Expired keys stay gone when the clock moves back.
		clk.Advance(-time.Hour)
		if _, ok := get(t, tb, "old2"); ok {
			t.Error("Get(old2) after expiry and the clock moved back: found")
		}
	})
}

// TestSuiteDropTable: a dropped table's handle fails, its entries leave
// memory at once, its name cannot be opened until the next checkpoint, and
// then opens empty.
func TestSuiteDropTable(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t, t.TempDir(), Options{})
		t1 := table(t, s, "op1.window", time.Hour)
		t2 := table(t, s, "op2.count", 0)
		put(t, t1, "a", "1")
		put(t, t2, "b", "2")
		commit(t, s, nil)
		put(t, t1, "c", "3") // changed when dropped
		if err := s.DropTable("op1.window"); err != nil {
			t.Fatal(err)
		}
		if err := s.DropTable("never.existed"); err != nil {
			t.Errorf("DropTable of a missing table = %v, want nil", err)
		}
		if _, _, err := t1.Get([]byte("a"), nil); !errors.Is(err, ErrTableDropped) {
			t.Errorf("Get on a dropped table = %v, want ErrTableDropped", err)
		}
		if err := t1.Put([]byte("a"), nil); !errors.Is(err, ErrTableDropped) {
			t.Errorf("Put on a dropped table = %v, want ErrTableDropped", err)
		}
		if _, err := s.Table("op1.window", time.Hour); !errors.Is(err, ErrTableDropped) {
			t.Errorf("Table(dropped name) before the checkpoint = %v, want ErrTableDropped", err)
		}
		if names, _ := s.Tables(); !slices.Equal(names, []string{"op2.count"}) {
			t.Errorf("Tables = %v, want [op2.count]", names)
		}
		if st := s.Stats(); st.Entries != 1 {
			t.Errorf("after the drop the store holds %d entries in memory, want 1", st.Entries)
		}
		p, err := s.Prepare(nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Entries() == 0 {
			t.Error("a checkpoint holding a drop has Entries 0")
		}
		if _, err := p.Commit(); err != nil {
			t.Fatal(err)
		}
		t1 = table(t, s, "op1.window", time.Hour)
		if got := dump(t, t1); len(got) != 0 {
			t.Errorf("re-created table holds %v, want nothing", got)
		}
		if v, _ := get(t, t2, "b"); v != "2" {
			t.Errorf("other table: Get(b) = %q, want 2", v)
		}
	})
}

// TestSuiteCheckpoint: Prepare captures the state at Prepare; Entries says
// whether anything changed; Commit numbers checkpoints and replaces the
// metadata; Abort hands the changes to the next checkpoint; changes made
// between Prepare and Commit are kept and belong to the next checkpoint;
// a reopen finds the last checkpoint in a durable store and nothing in the
// others.
func TestSuiteCheckpoint(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		dir := t.TempDir()
		s := k.open(t, dir, Options{})
		if info, err := s.LastCheckpoint(); err != nil || info.Seq != 0 {
			t.Fatalf("LastCheckpoint of a new store = %+v, %v; want seq 0", info, err)
		}
		tb := table(t, s, "op1.count", 0)
		put(t, tb, "a", "1")
		p, err := s.Prepare(map[string][]byte{"log": []byte("5"), "outbox": []byte("50")})
		if err != nil {
			t.Fatal(err)
		}
		if p.Entries() == 0 {
			t.Error("Entries = 0 with a key changed since the last checkpoint")
		}
		put(t, tb, "b", "2") // after Prepare: the next checkpoint's
		st, err := p.Commit()
		if err != nil || st.Seq != 1 {
			t.Fatalf("Commit = seq %d, %v; want 1, nil", st.Seq, err)
		}
		if _, err := p.Commit(); err == nil {
			t.Error("second Commit: got nil error")
		}
		p.Abort() // after Commit: does nothing
		info, err := s.LastCheckpoint()
		if err != nil || info.Seq != 1 || string(info.Meta["log"]) != "5" || string(info.Meta["outbox"]) != "50" {
			t.Errorf("LastCheckpoint = %+v, %v; want seq 1 with log 5, outbox 50", info, err)
		}
		info.Meta["log"][0] = 'X' // the caller's copy
		if again, _ := s.LastCheckpoint(); string(again.Meta["log"]) != "5" {
			t.Errorf("LastCheckpoint's meta is shared with a caller: %q", again.Meta["log"])
		}
		if v, ok := get(t, tb, "b"); !ok || v != "2" {
			t.Errorf("a change made during the commit was lost: Get(b) = %q, %v", v, ok)
		}

		// The change after Prepare makes the next checkpoint non-empty; an
		// aborted checkpoint hands its changes on.
		p, err = s.Prepare(map[string][]byte{"log": []byte("6")})
		if err != nil {
			t.Fatal(err)
		}
		if p.Entries() == 0 {
			t.Error("Entries = 0 although b changed after the last Prepare")
		}
		p.Abort()
		p.Abort()
		p, err = s.Prepare(map[string][]byte{"log": []byte("6")})
		if err != nil {
			t.Fatal(err)
		}
		if p.Entries() == 0 {
			t.Error("Entries = 0 after an Abort: the aborted changes were not handed on")
		}
		if st, err := p.Commit(); err != nil || st.Seq != 2 {
			t.Fatalf("Commit = seq %d, %v; want 2", st.Seq, err)
		}
		info, _ = s.LastCheckpoint()
		if _, ok := info.Meta["outbox"]; ok || string(info.Meta["log"]) != "6" {
			t.Errorf("meta after the second checkpoint = %v; want only log 6 (meta is replaced)", info.Meta)
		}
		p, err = s.Prepare(map[string][]byte{"log": []byte("6")})
		if err != nil {
			t.Fatal(err)
		}
		if p.Entries() != 0 {
			t.Errorf("Entries = %d with nothing changed since the last checkpoint, want 0", p.Entries())
		}
		p.Abort()

		// A change after the last checkpoint, then the process ends.
		put(t, tb, "c", "3")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = k.open(t, dir, Options{})
		tb = table(t, s, "op1.count", 0)
		info, err = s.LastCheckpoint()
		if err != nil {
			t.Fatal(err)
		}
		got := dump(t, tb)
		if k.durable {
			if info.Seq != 2 || string(info.Meta["log"]) != "6" {
				t.Errorf("after reopen LastCheckpoint = %+v, want seq 2, log 6", info)
			}
			if want := map[string]string{"a": "1", "b": "2"}; !maps.Equal(got, want) {
				t.Errorf("after reopen the table holds %v, want the checkpoint's %v", got, want)
			}
		} else {
			if info.Seq != 0 || len(got) != 0 {
				t.Errorf("after reopen: LastCheckpoint seq %d, table %v; want a new, empty store", info.Seq, got)
			}
		}
	})
}

// TestSuitePrepareWaits: a second Prepare waits until the first Pending
// ends.
func TestSuitePrepareWaits(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		synctest.Test(t, func(t *testing.T) {
			s := k.open(t, t.TempDir(), Options{})
			put(t, table(t, s, "t", 0), "a", "1")
			p, err := s.Prepare(nil)
			if err != nil {
				t.Fatal(err)
			}
			second := make(chan error, 1)
			go func() {
				p2, err := s.Prepare(nil)
				if err == nil {
					_, err = p2.Commit()
				}
				second <- err
			}()
			synctest.Wait() // the goroutine is blocked, or done
			select {
			case err := <-second:
				t.Fatalf("a second Prepare returned (%v) while the first was pending", err)
			default:
			}
			if _, err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := <-second; err != nil {
				t.Fatalf("second checkpoint: %v", err)
			}
			if info, _ := s.LastCheckpoint(); info.Seq != 2 {
				t.Errorf("LastCheckpoint seq = %d, want 2", info.Seq)
			}
		})
	})
}

// TestSuiteBudget: both stores charge an entry alike (EntryOverhead, the
// key, the value and its header: write time and checksum), so the state that fits one
// budget fits the other. Writing 4 times the budget: a store with a hard
// budget refuses what does not fit with ErrFull and keeps the rest; the
// other takes everything and is back within the budget after a checkpoint.
// Either way every accepted key reads back with its value, and deleting
// keys makes room again.
func TestSuiteBudget(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		const budget = 16 << 10
		s := k.open(t, t.TempDir(), Options{CacheBytes: budget})
		tb := table(t, s, "op1.window", 0)
		val := bytes.Repeat([]byte("v"), 100)
		put(t, tb, "first", string(val))
		if st := s.Stats(); st.CacheBytes != EntryOverhead+5+hdr+100 || st.Budget != budget {
			t.Errorf("one entry: Stats = %+v; want CacheBytes %d, Budget %d", st, EntryOverhead+5+hdr+100, budget)
		}
		if err := tb.Delete([]byte("first")); err != nil {
			t.Fatal(err)
		}
		commit(t, s, nil)
		per := int64(EntryOverhead + 8 + hdr + len(val))
		n := int(4 * budget / per)
		var accepted []string
		refused := 0
		for i := range n {
			key := fmt.Sprintf("key%05d", i)
			switch err := tb.Put([]byte(key), val); {
			case err == nil:
				accepted = append(accepted, key)
			case errors.Is(err, ErrFull) && k.hardBudget:
				refused++
				if _, ok := get(t, tb, key); ok {
					t.Fatalf("refused Put(%s) left the key present", key)
				}
			default:
				t.Fatalf("Put(%s): %v", key, err)
			}
			if st := s.Stats(); k.hardBudget && st.CacheBytes > budget {
				t.Fatalf("after %d puts the store holds %d bytes, over its budget %d", i+1, st.CacheBytes, budget)
			}
		}
		st := s.Stats()
		if k.hardBudget {
			if want := int(budget / per); len(accepted) != want || refused != n-want || st.Refused != uint64(refused) {
				t.Errorf("accepted %d, refused %d (Stats.Refused %d); want %d accepted, the other %d refused",
					len(accepted), refused, st.Refused, want, n-want)
			}
		} else if len(accepted) != n || !st.OverBudget {
			t.Errorf("accepted %d of %d, OverBudget %v; want every Put accepted, over budget until the checkpoint", len(accepted), n, st.OverBudget)
		}
		commit(t, s, nil)
		if st := s.Stats(); st.CacheBytes > budget {
			t.Errorf("after the checkpoint the store holds %d bytes in memory, budget %d", st.CacheBytes, budget)
		}
		for _, key := range accepted {
			if v, ok := get(t, tb, key); !ok || v != string(val) {
				t.Fatalf("Get(%s) = %d bytes, %v; want the value written", key, len(v), ok)
			}
		}
		if n, _ := tb.Len(); n != len(accepted) {
			t.Errorf("Len = %d, want %d", n, len(accepted))
		}
		// Deleting keys makes room for new ones, in any store.
		for _, key := range accepted[:len(accepted)/2] {
			if err := tb.Delete([]byte(key)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range len(accepted) / 4 {
			put(t, tb, fmt.Sprintf("new%05d", i), string(val))
		}
		// Overwriting a key with a value of the same size never needs room.
		put(t, tb, accepted[len(accepted)-1], string(bytes.Repeat([]byte("w"), len(val))))
	})
}

// TestSuiteConcurrent runs writers, readers, rangers and checkpoints at
// once (the race detector watches) and checks the final state.
func TestSuiteConcurrent(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		s := k.open(t, t.TempDir(), Options{CacheBytes: 1 << 20})
		const writers, keys = 4, 200
		var wg sync.WaitGroup
		done := make(chan struct{})
		for w := range writers {
			tb := table(t, s, fmt.Sprintf("op%d", w), 0)
			wg.Go(func() {
				for i := range keys {
					if err := tb.Put([]byte(fmt.Sprintf("k%03d", i)), []byte(fmt.Sprint(i))); err != nil {
						t.Error(err)
						return
					}
					if _, _, err := tb.Get([]byte(fmt.Sprintf("k%03d", keys-1-i)), nil); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		var bg sync.WaitGroup
		bg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				p, err := s.Prepare(nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := p.Commit(); err != nil {
					t.Error(err)
					return
				}
			}
		})
		bg.Go(func() {
			tb := table(t, s, "op0", 0)
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := tb.Range(func(k, v []byte) bool { return true }); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Wait()
		close(done)
		bg.Wait()
		for w := range writers {
			tb := table(t, s, fmt.Sprintf("op%d", w), 0)
			if n, err := tb.Len(); err != nil || n != keys {
				t.Errorf("op%d: Len = %d, %v; want %d", w, n, err, keys)
			}
			if v, _ := get(t, tb, "k123"); v != "123" {
				t.Errorf("op%d: Get(k123) = %q, want 123", w, v)
			}
		}
	})
}
