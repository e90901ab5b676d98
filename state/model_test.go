package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// modelRec is the model of one key: its value, its write time and the serial
// number of the operation that wrote it.
type modelRec struct {
	val    string
	wt     int64
	serial int
}

// TestModel runs random sequences of operations against a DB with a cache
// budget of a few entries and against a plain map model, with checkpoints
// (atomic and split around concurrent writes), aborts, reopens (which drop
// what was not checkpointed) and a TTL table on a virtual clock.
func TestModel(t *testing.T) {
	dir := t.TempDir()
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		path := filepath.Join(dir, fmt.Sprintf("m%d.db", run))
		defer os.Remove(path)
		clk := newClock()
		budget := int64(rapid.IntRange(EntryOverhead, 8*EntryOverhead).Draw(rt, "budget"))
		ttls := map[string]time.Duration{"a": 0, "b": 10 * time.Second}
		db, err := Open(path, Options{CacheBytes: budget, Now: clk.Now})
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		tables := map[string]Table{}
		openTables := func() {
			for name, ttl := range ttls {
				if tables[name], err = db.Table(name, ttl); err != nil {
					rt.Fatal(err)
				}
			}
		}
		openTables()
		cur := map[string]map[string]modelRec{"a": {}, "b": {}}
		com := map[string]map[string]modelRec{"a": {}, "b": {}}
		serial := 0
		var pending Pending
		dropA := 0                                 // table "a": 0 live, 1 dropped, 2 drop held by the pending checkpoint
		var snapCur map[string]map[string]modelRec // cur at Prepare
		var snapNow int64

		// The state clock is the virtual clock plus off: a reopen resumes
		// it from the last committed checkpoint, whatever the clock says.
		var off, ckptNow int64
		ckpted := false
		stateNow := func() int64 { return clk.ns.Load() + off }
		copyModel := func(m map[string]map[string]modelRec) map[string]map[string]modelRec {
			c := map[string]map[string]modelRec{}
			for tn, kv := range m {
				c[tn] = map[string]modelRec{}
				for k, r := range kv {
					c[tn][k] = r
				}
			}
			return c
		}
		live := func(tn string, r modelRec) bool {
			ttl := int64(ttls[tn])
			return ttl == 0 || r.wt > stateNow()-ttl
		}
		// commit applies a checkpoint of state snap prepared at time now.
		commit := func(snap map[string]map[string]modelRec, now int64) {
			ckptNow, ckpted = now, true
			com = copyModel(snap)
			for tn, kv := range com {
				ttl := int64(ttls[tn])
				if ttl == 0 {
					continue
				}
				for k, r := range kv {
					if r.wt <= now-ttl {
						delete(kv, k)
						if c, ok := cur[tn][k]; ok && c.serial == r.serial {
							delete(cur[tn], k)
						}
					}
				}
			}
		}
		// droppedCall reports whether table tn is dropped, after checking
		// that err says so.
		droppedCall := func(rt *rapid.T, tn string, err error) bool {
			if tn != "a" || dropA == 0 {
				return false
			}
			if !errors.Is(err, ErrTableDropped) {
				rt.Fatalf("call on dropped table: err %v, want ErrTableDropped", err)
			}
			return true
		}
		reopenA := func(rt *rapid.T) {
			if tables["a"], err = db.Table("a", 0); err != nil {
				rt.Fatal(err)
			}
		}
		keyGen := rapid.SampledFrom([]string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "longer-key-8", "k9"})
		tableGen := rapid.SampledFrom([]string{"a", "b"})

		rt.Repeat(map[string]func(*rapid.T){
			"put": func(rt *rapid.T) {
				tn, k := tableGen.Draw(rt, "table"), keyGen.Draw(rt, "key")
				v := rapid.StringN(0, 40, -1).Draw(rt, "val")
				if err := tables[tn].Put([]byte(k), []byte(v)); droppedCall(rt, tn, err) {
					return
				} else if err != nil {
					rt.Fatal(err)
				}
				serial++
				cur[tn][k] = modelRec{v, stateNow(), serial}
			},
			"delete": func(rt *rapid.T) {
				tn, k := tableGen.Draw(rt, "table"), keyGen.Draw(rt, "key")
				if err := tables[tn].Delete([]byte(k)); droppedCall(rt, tn, err) {
					return
				} else if err != nil {
					rt.Fatal(err)
				}
				delete(cur[tn], k)
			},
			"get": func(rt *rapid.T) {
				tn, k := tableGen.Draw(rt, "table"), keyGen.Draw(rt, "key")
				v, ok, err := tables[tn].Get([]byte(k), nil)
				if droppedCall(rt, tn, err) {
					return
				} else if err != nil {
					rt.Fatal(err)
				}
				r, wok := cur[tn][k]
				wok = wok && live(tn, r)
				if ok != wok || (ok && string(v) != r.val) {
					rt.Fatalf("Get(%s, %q) = %q, %v; want %q, %v", tn, k, v, ok, r.val, wok)
				}
			},
			"advance": func(rt *rapid.T) {
				clk.Advance(time.Duration(rapid.IntRange(0, 6).Draw(rt, "seconds")) * time.Second)
			},
			"checkpoint": func(rt *rapid.T) {
				if pending != nil {
					return // not applicable in this state: a no-op step
				}
				if _, err := db.Checkpoint(map[string][]byte{"n": []byte(fmt.Sprint(serial))}); err != nil {
					rt.Fatal(err)
				}
				commit(copyModel(cur), stateNow())
				if dropA != 0 {
					dropA = 0
					reopenA(rt)
				}
			},
			"prepare": func(rt *rapid.T) {
				if pending != nil {
					return // not applicable in this state: a no-op step
				}
				if pending, err = db.Prepare(nil); err != nil {
					rt.Fatal(err)
				}
				snapCur, snapNow = copyModel(cur), stateNow()
				if dropA == 1 {
					dropA = 2
				}
			},
			"commit": func(rt *rapid.T) {
				if pending == nil {
					return // not applicable in this state: a no-op step
				}
				if _, err := pending.Commit(); err != nil {
					rt.Fatal(err)
				}
				pending = nil
				commit(snapCur, snapNow)
				if dropA == 2 {
					dropA = 0
					reopenA(rt)
				}
			},
			"abort": func(rt *rapid.T) {
				if pending == nil {
					return // not applicable in this state: a no-op step
				}
				pending.Abort()
				pending = nil
				if dropA == 2 {
					dropA = 1
				}
			},
			"drop": func(rt *rapid.T) {
				if err := db.DropTable("a"); err != nil {
					rt.Fatal(err)
				}
				if _, err := db.Table("a", 0); !errors.Is(err, ErrTableDropped) {
					rt.Fatalf("Table(a) after DropTable = %v, want ErrTableDropped", err)
				}
				cur["a"] = map[string]modelRec{}
				if dropA == 0 {
					dropA = 1
				}
			},
			"reopen": func(rt *rapid.T) {
				if pending != nil {
					return // not applicable in this state: a no-op step
				}
				if err := db.Close(); err != nil {
					rt.Fatal(err)
				}
				// The wall clock moves on while the DB is closed, by up to a
				// day: the state clock does not.
				clk.Advance(time.Duration(rapid.IntRange(0, 86400).Draw(rt, "closed seconds")) * time.Second)
				if db, err = Open(path, Options{CacheBytes: budget, Now: clk.Now}); err != nil {
					rt.Fatal(err)
				}
				off = 0
				if ckpted {
					off = ckptNow - clk.ns.Load()
				}
				openTables()
				cur = copyModel(com)
				dropA = 0
			},
			"range": func(rt *rapid.T) {
				tn := tableGen.Draw(rt, "table")
				got := map[string]string{}
				if err := tables[tn].Range(func(k, v []byte) bool {
					got[string(k)] = string(v)
					return true
				}); droppedCall(rt, tn, err) {
					return
				} else if err != nil {
					rt.Fatal(err)
				}
				want := map[string]string{}
				for k, r := range cur[tn] {
					if live(tn, r) {
						want[k] = r.val
					}
				}
				if !mapsEqual(got, want) {
					rt.Fatalf("Range(%s) = %v, want %v", tn, got, want)
				}
			},
			"len": func(rt *rapid.T) {
				if pending != nil {
					return // not applicable in this state: a no-op step
				}
				tn := tableGen.Draw(rt, "table")
				n, err := tables[tn].Len()
				if droppedCall(rt, tn, err) {
					return
				} else if err != nil {
					rt.Fatal(err)
				}
				if n != len(cur[tn]) {
					rt.Fatalf("Len(%s) = %d, want %d", tn, n, len(cur[tn]))
				}
			},
			"": func(rt *rapid.T) {
				st := db.Stats()
				if st.DirtyEntries == 0 && st.CacheBytes > budget {
					rt.Fatalf("no dirty entries but the cache holds %d bytes, budget %d", st.CacheBytes, budget)
				}
			},
		})
		if pending != nil {
			pending.Abort()
		}
		if err := db.Check(); err != nil {
			rt.Fatal(err)
		}
	})
}
