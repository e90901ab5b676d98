package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeLegacyFile writes, with bbolt directly, a state file as the
// version before checksums did: values behind an 8-byte write time, one
// checkpoint at ckptTime. Tables: op1.window (no TTL), op2.dedup (TTL,
// with its index) and op3.late (no index: opened with a TTL later). It
// returns the content.
func writeLegacyFile(t *testing.T, path string, ckptTime int64) flipContent {
	t.Helper()
	want := flipContent{}
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bolt.Tx) error {
		for ti, name := range []string{"op1.window", "op2.dedup", "op3.late"} {
			b, err := tx.CreateBucket([]byte("t/" + name))
			if err != nil {
				return err
			}
			var ix *bolt.Bucket
			if name == "op2.dedup" {
				if ix, err = tx.CreateBucket([]byte("x/" + name)); err != nil {
					return err
				}
			}
			want[name] = map[string][]byte{}
			for i, n := range []int{0, 1, 8, 100, 5000} {
				k := fmt.Sprintf("%s/old%d", name, i)
				v := bytes.Repeat([]byte{byte('a' + ti + i)}, n)
				wt := ckptTime - int64(time.Duration(10-i)*time.Minute)
				stored := append(binary.BigEndian.AppendUint64(nil, uint64(wt)), v...)
				if err := b.Put([]byte(k), stored); err != nil {
					return err
				}
				if ix != nil {
					if err := ix.Put(indexKey(nil, uint64(wt), []byte(k)), nil); err != nil {
						return err
					}
				}
				want[name][k] = v
			}
		}
		cb, err := tx.CreateBucket(bucketCkpt)
		if err != nil {
			return err
		}
		if err := cb.Put(keySeq, binary.BigEndian.AppendUint64(nil, 1)); err != nil {
			return err
		}
		if err := cb.Put(keyTime, binary.BigEndian.AppendUint64(nil, uint64(ckptTime))); err != nil {
			return err
		}
		mb, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return mb.Put([]byte("cursor"), []byte{1})
	})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

var legacyTTL = map[string]time.Duration{"op1.window": 0, "op2.dedup": time.Hour, "op3.late": time.Hour}

// readLegacy reads every table of db through Get, Range and Len, and checks
// the file, expecting want.
func readLegacy(t *testing.T, db *DB, want flipContent) {
	t.Helper()
	for name, kv := range want {
		tb := mustTable(t, db, name, legacyTTL[name])
		for k, w := range kv {
			v, ok, err := tb.Get([]byte(k), nil)
			if err != nil || !ok || !bytes.Equal(v, w) {
				t.Errorf("%s: Get(%s) = %d bytes, %v, %v; want %d bytes", name, k, len(v), ok, err, len(w))
			}
		}
		seen := 0
		err := tb.Range(func(k, v []byte) bool {
			seen++
			if w, ok := kv[string(k)]; !ok || !bytes.Equal(v, w) {
				t.Errorf("%s: Range gave %s = %d bytes, want %v %d bytes", name, k, len(v), ok, len(w))
			}
			return true
		})
		if err != nil || seen != len(kv) {
			t.Errorf("%s: Range saw %d keys, %v; want %d", name, seen, err, len(kv))
		}
		if n, err := tb.Len(); err != nil || n != len(kv) {
			t.Errorf("%s: Len = %d, %v; want %d", name, n, err, len(kv))
		}
	}
	if err := db.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// TestLegacyValues: a file written before values carried a checksum opens
// and reads as it is (no pass rewrites it); it takes new writes, which
// carry a checksum, and old and new values read back side by side, after
// a reopen too; a value an old file's TTL expires is deleted as before.
// The first checkpoint records the file's legacy bound: a value without a
// checksum written after it is damage.
func TestLegacyValues(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "state.db")
	ckptTime := clk.ns.Load() - int64(time.Minute)
	want := writeLegacyFile(t, path, ckptTime)

	db, err := Open(path, clk.opts(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := db.LastCheckpoint(); err != nil || info.Seq != 1 || string(info.Meta["cursor"]) != "\x01" {
		t.Fatalf("LastCheckpoint = %+v, %v; want seq 1 and its metadata", info, err)
	}
	readLegacy(t, db, want)
	// New writes: some old keys rewritten, new keys, one deleted.
	for name := range want {
		tb := mustTable(t, db, name, legacyTTL[name])
		for _, k := range []string{name + "/old1", name + "/old3", name + "/new"} {
			v := []byte("rewritten " + k)
			if err := tb.Put([]byte(k), v); err != nil {
				t.Fatal(err)
			}
			want[name][k] = v
		}
		if err := tb.Delete([]byte(name + "/old2")); err != nil {
			t.Fatal(err)
		}
		delete(want[name], name+"/old2")
	}
	clk.Advance(time.Minute)
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	readLegacy(t, db, want)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// The file holds both layouts, and records the legacy bound.
	kinds := map[bool]int{}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.View(func(tx *bolt.Tx) error {
		if lv := tx.Bucket(bucketCkpt).Get(keyLegacy); len(lv) != 8 || int64(binary.BigEndian.Uint64(lv)) != ckptTime {
			t.Errorf("legacy bound %x, want %d", lv, ckptTime)
		}
		return tx.Bucket([]byte("t/op1.window")).ForEach(func(k, v []byte) error {
			kinds[binary.BigEndian.Uint64(v)&sumFlag != 0]++
			return nil
		})
	})
	_ = bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	if kinds[true] != 3 || kinds[false] != 2 {
		t.Errorf("op1.window holds %d values with a checksum and %d without; want 3 and 2", kinds[true], kinds[false])
	}

	db, err = Open(path, clk.opts(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	readLegacy(t, db, want)
	// The TTL expires old and new values alike.
	clk.Advance(2 * time.Hour)
	st, err := db.Checkpoint(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 2*len(want["op2.dedup"]) {
		t.Errorf("expired %d keys, want %d", st.Expired, 2*len(want["op2.dedup"]))
	}
	want["op2.dedup"], want["op3.late"] = map[string][]byte{}, map[string][]byte{}
	readLegacy(t, db, want)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyBound: a value without a checksum written after the file's
// legacy bound (what a flip that clears a checksummed value's marker
// looks like) is damage, at Open and when read while open; in a file
// created with checksums (bound 0), every value without one is.
func TestLegacyBound(t *testing.T) {
	clk := newClock()
	for _, legacyFile := range []bool{true, false} {
		t.Run(fmt.Sprint("legacy file ", legacyFile), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if legacyFile {
				writeLegacyFile(t, path, clk.ns.Load()-int64(time.Minute))
			} else {
				writeFlipFixture(t, path, clk)
			}
			// op1.window's key k: a value without checksum, written now.
			k := []byte("op1.window/late")
			bad := append(binary.BigEndian.AppendUint64(nil, uint64(clk.ns.Load())), "late"...)
			db, err := Open(path, clk.opts(4<<10))
			if err != nil {
				t.Fatal(err)
			}
			err = db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("t/op1.window")).Put(k, bad) })
			if err != nil {
				t.Fatal(err)
			}
			tb := mustTable(t, db, "op1.window", 0)
			if v, ok, err := tb.Get(k, nil); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Get = %q, %v, %v; want an error wrapping ErrCorrupt", v, ok, err)
			}
			if err := db.Close(); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatal(err)
			}
			_ = os.Remove(path + noteSuffix)
			_, err = Open(path, clk.opts(4<<10))
			if where := fmt.Sprintf("table %q: key %x:", "op1.window", k); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), where) {
				t.Errorf("Open = %v, want an error wrapping ErrCorrupt that says %s", err, where)
			}
		})
	}
}
