package state

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// flipTables are the tables of the value-damage fixture: with and without
// a TTL, values from empty to more than a page (overflow pages). Each table
// is large enough not to be inlined in its parent's page (the test finds
// the stored bytes through bbolt's map, and bbolt copies inline buckets).
var flipTables = []struct {
	name  string
	ttl   time.Duration
	sizes []int
}{
	{"op1.window", 0, []int{0, 1, 8, 13, 64, 300}},
	{"op2.dedup", time.Hour, []int{0, 3, 9, 40, 1100}},
	{"op3.sum", 0, []int{5, 4500}},
}

// flipContent is the content of the fixture: table -> key -> value.
type flipContent map[string]map[string][]byte

func (c flipContent) clone() flipContent {
	out := flipContent{}
	for name, kv := range c {
		out[name] = map[string][]byte{}
		for k, v := range kv {
			out[name][k] = v
		}
	}
	return out
}

// writeFlipFixture writes a closed state file holding flipTables, with
// two keys of each size per table, over two checkpoints.
func writeFlipFixture(t *testing.T, path string, clk *clock) flipContent {
	t.Helper()
	want := flipContent{}
	db, err := Open(path, clk.opts(0))
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		for _, ft := range flipTables {
			tb := mustTable(t, db, ft.name, ft.ttl)
			if want[ft.name] == nil {
				want[ft.name] = map[string][]byte{}
			}
			for i, n := range ft.sizes {
				k := fmt.Sprintf("%s/k%02d-%d", ft.name, i, round)
				v := make([]byte, n)
				for j := range v {
					v[j] = byte(j*7 + i + round)
				}
				if err := tb.Put([]byte(k), v); err != nil {
					t.Fatal(err)
				}
				want[ft.name][k] = v
			}
		}
		clk.Advance(time.Minute)
		if _, err := db.Checkpoint(map[string][]byte{"cursor": {byte(round)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

// storedRanges returns the file offsets of every byte of the tables'
// stored keys and values (header included), found through bbolt's map.
func storedRanges(t *testing.T, path string) (keys, vals [][2]int64) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	base := bdb.Info().Data
	off := func(b []byte) int64 { return int64(uintptr(unsafe.Pointer(unsafe.SliceData(b))) - base) }
	err = bdb.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if !bytes.HasPrefix(name, []byte("t/")) {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				keys = append(keys, [2]int64{off(k), off(k) + int64(len(k))})
				vals = append(vals, [2]int64{off(v), off(v) + int64(len(v))})
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys, vals
}

// flipOutcome is what the API did with one damaged file.
type flipOutcome struct {
	detected bool     // an error wrapping ErrCorrupt
	wrong    []string // reads that returned a value other than the stored one
	missing  []string // reads that did not find a stored key
	other    error    // an error not wrapping ErrCorrupt
}

// check sorts the error of the step what into o; it reports whether to go
// on.
func (o *flipOutcome) check(what string, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrCorrupt):
		o.detected = true
	default:
		o.other = fmt.Errorf("%s: %w", what, err)
	}
	return false
}

// readBack reads every table of db through Get, Range and Len and
// compares with want; wrong reads go to o.wrong.
func readBack(db *DB, want flipContent, o *flipOutcome) bool {
	for _, ft := range flipTables {
		tb, err := db.Table(ft.name, ft.ttl)
		if !o.check("table", err) {
			return false
		}
		for _, k := range slices.Sorted(maps.Keys(want[ft.name])) {
			v, ok, err := tb.Get([]byte(k), nil)
			if !o.check("get", err) {
				return false
			}
			switch w := want[ft.name][k]; {
			case !ok:
				o.missing = append(o.missing, fmt.Sprintf("get %s: absent", k))
			case !bytes.Equal(v, w):
				o.wrong = append(o.wrong, fmt.Sprintf("get %s: %d bytes, want %d bytes", k, len(v), len(w)))
			}
		}
	}
	return rangeBack(db, want, o)
}

func rangeBack(db *DB, want flipContent, o *flipOutcome) bool {
	for _, ft := range flipTables {
		tb, err := db.Table(ft.name, ft.ttl)
		if !o.check("table", err) {
			return false
		}
		seen := 0
		err = tb.Range(func(k, v []byte) bool {
			seen++
			if w, ok := want[ft.name][string(k)]; !ok || !bytes.Equal(v, w) {
				o.wrong = append(o.wrong, fmt.Sprintf("range %q: %d bytes, want %v %d bytes", k, len(v), ok, len(w)))
			}
			return true
		})
		if !o.check("range", err) {
			return false
		}
		if seen != len(want[ft.name]) {
			o.missing = append(o.missing, fmt.Sprintf("range %s: %d keys, want %d", ft.name, seen, len(want[ft.name])))
		}
		n, err := tb.Len()
		if !o.check("len", err) {
			return false
		}
		if n != len(want[ft.name]) {
			o.wrong = append(o.wrong, fmt.Sprintf("len %s: %d, want %d", ft.name, n, len(want[ft.name])))
		}
	}
	return true
}

// blindCheckpoint overwrites every key of the tables without a TTL
// without reading them (the checkpoint reads the file's version for the
// TTL index), moves the clock past the TTL so that the checkpoint expires
// every key of the TTL table, and checkpoints. It updates want.
func blindCheckpoint(db *DB, clk *clock, want flipContent, o *flipOutcome) bool {
	for _, ft := range flipTables {
		tb, err := db.Table(ft.name, ft.ttl)
		if !o.check("table", err) {
			return false
		}
		if ft.ttl > 0 {
			want[ft.name] = map[string][]byte{}
			continue
		}
		for k := range want[ft.name] {
			v := []byte("new " + k)
			if !o.check("put", tb.Put([]byte(k), v)) {
				return false
			}
			want[ft.name][k] = v
		}
	}
	clk.Advance(2 * time.Hour)
	_, err := db.Checkpoint(map[string][]byte{"cursor": {9}})
	return o.check("checkpoint", err)
}

// useDamaged runs the API over the damaged file at path: when open is
// set, damage is applied (by damage) while the DB is open with an empty
// cache, else before Open. first picks the first reader: 0 Get, 1 Range,
// 2 a checkpoint that overwrites blind and expires, 3 Check.
func useDamaged(t *testing.T, path string, clk *clock, want flipContent, damage func(), open bool, first int) flipOutcome {
	var o flipOutcome
	if !open {
		damage()
	}
	db, err := Open(path, clk.opts(1<<10))
	if !o.check("open", err) {
		return o
	}
	defer func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("close: %v", err)
		}
	}()
	if open {
		damage()
	}
	want = want.clone()
	switch first {
	case 1:
		if !rangeBack(db, want, &o) {
			return o
		}
	case 2:
		if !blindCheckpoint(db, clk, want, &o) {
			return o
		}
	case 3:
		if !o.check("check", db.Check()) {
			return o
		}
	}
	if !readBack(db, want, &o) {
		return o
	}
	tb, err := db.Table(flipTables[0].name, 0)
	if !o.check("table", err) {
		return o
	}
	if !o.check("put", tb.Put([]byte("after"), []byte("damage"))) {
		return o
	}
	if _, err := db.Checkpoint(nil); !o.check("checkpoint", err) {
		return o
	}
	o.check("check", db.Check())
	return o
}

// TestValueDamage flips, one at a time, the bytes of the stored values
// (write-time header and checksum included) and keys of a closed state
// file, before Open or while the DB is open with an empty cache, and reads
// everything back through the API: every flip in a value must end as an
// error wrapping ErrCorrupt (Open, Get, Range, a checkpoint or Check),
// never as a wrong or missing value, a panic or a hang. A flipped key must
// be found too, by the end; before that, Get does not find the key (see
// below).
func TestValueDamage(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.db")
	clk := newClock()
	want := writeFlipFixture(t, clean, clk)
	pristine, err := os.ReadFile(clean)
	if err != nil {
		t.Fatal(err)
	}
	keys, vals := storedRanges(t, clean)
	type flip struct {
		off  int64
		mask byte
		what string
	}
	// Every byte of values up to 96 bytes, of the first and last 32 bytes
	// of longer ones and one in 61 between, and of one key per table and
	// checkpoint; one byte in two has every bit flipped, the other a
	// single bit. Each flip is tried once, before Open or while open, with
	// one of the four first readers in turn: every byte of all values
	// twice over would take minutes of fsyncs.
	var flips []flip
	for i, r := range append(slices.Clone(vals), keys...) {
		what := "value"
		if i >= len(vals) {
			what = "key"
			if (i-len(vals))%2 != 0 {
				continue
			}
		}
		for off := r[0]; off < r[1]; off++ {
			if r[1]-r[0] > 96 && off >= r[0]+32 && off < r[1]-32 && (off-r[0])%61 != 0 {
				continue
			}
			if off < 0 || off >= int64(len(pristine)) {
				t.Fatalf("stored bytes at %d, outside the file: an inline bucket?", off)
			}
			mask := byte(0xff)
			if off%2 == 1 {
				mask = 1 << (off / 2 % 8)
			}
			flips = append(flips, flip{off, mask, what})
		}
	}
	path := filepath.Join(dir, "state.db")
	silent, wrong := map[string]int{}, map[string]int{}
	keyBefore := 0
	var examples []string
	for i, f := range flips {
		open := i/2%2 == 1
		{
			if err := os.WriteFile(path, pristine, 0o600); err != nil {
				t.Fatal(err)
			}
			_ = os.Remove(path + noteSuffix)
			damage := func() {
				fh, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer fh.Close()
				if _, err := fh.WriteAt([]byte{pristine[f.off] ^ f.mask}, f.off); err != nil {
					t.Fatal(err)
				}
			}
			c := &clock{}
			c.ns.Store(clk.ns.Load())
			o := useDamaged(t, path, c, want, damage, open, i/4%4)
			where := fmt.Sprintf("%s flipped before open", f.what)
			if open {
				where = fmt.Sprintf("%s flipped while open", f.what)
			}
			// A flipped key is a key Get does not find until a read of
			// the file meets it (Range, the expiry, Check): before
			// that, a checkpoint may also write the key beside it in a
			// page whose key order the flip broke, where bbolt's search
			// then finds the old version. The checksum covers the key,
			// so the damage is found: by the end, it must be.
			if f.what == "key" && o.detected && len(o.missing)+len(o.wrong) > 0 {
				keyBefore++
				o.missing, o.wrong = nil, nil
			}
			switch {
			case o.other != nil:
				t.Errorf("flip of byte %d (%#x) of a %s: error not wrapping ErrCorrupt: %v", f.off, f.mask, where, o.other)
			case len(o.wrong)+len(o.missing) > 0:
				wrong[where]++
				if len(examples) < 5 {
					examples = append(examples, fmt.Sprintf("byte %d (%#x, %s): %s", f.off, f.mask, where, strings.Join(append(o.wrong, o.missing...), "; ")))
				}
			case !o.detected:
				silent[where]++
			}
		}
	}
	t.Logf("%d flips; wrong or missing %v; undetected %v; %d flipped keys read wrong or absent before the damage was found",
		len(flips), wrong, silent, keyBefore)
	for _, e := range examples {
		t.Log(e)
	}
	if len(wrong) > 0 || len(silent) > 0 {
		t.Errorf("wrong values returned %v, flips undetected %v; want none", wrong, silent)
	}
}
