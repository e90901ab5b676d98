package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pspf/pspf-edge/internal/testkit"
)

// goodFile writes a state file with two tables of n keys each and two
// checkpoints, and returns its bytes cut to the pages in use (bbolt grows
// files in large steps of zeros).
func goodFile(t testing.TB, dir string, n int) []byte {
	t.Helper()
	path := filepath.Join(dir, "good.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for ck := range 2 {
		for _, name := range []string{"op1.window", "op2.dedup"} {
			tb, err := db.Table(name, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if err := tb.Put(fmt.Appendf(nil, "%s-key-%05d", name, i), fmt.Appendf(nil, "value %d of checkpoint %d", i, ck)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := db.Checkpoint(map[string][]byte{"cursor": {byte(ck + 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	m, err := readMeta(bytes.NewReader(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := readMeta(bytes.NewReader(data), int64(m.pageSize))
	if err != nil {
		t.Fatal(err)
	}
	return data[:max(m.pgid, m1.pgid)*uint64(m.pageSize)]
}

// pageKinds lists the page ids of data by type, as bbolt sees them.
func pageKinds(t testing.TB, data []byte) map[string][]int {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kinds.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(p, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	kinds := map[string][]int{}
	err = db.View(func(tx *bolt.Tx) error {
		for i := 0; ; i++ {
			info, err := tx.Page(i)
			if err != nil || info == nil {
				return err
			}
			kinds[info.Type] = append(kinds[info.Type], i)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return kinds
}

// TestOpenDamaged damages a state file in the ways a bad card or a bad
// copy does, and checks what Open makes of each: an error wrapping
// ErrCorrupt, never a panic, a hang or a silent success over damage; a
// single bad meta page opens at the other one, with a warning.
func TestOpenDamaged(t *testing.T) {
	dir := t.TempDir()
	data := goodFile(t, dir, 2000)
	const ps = 4096
	kinds := pageKinds(t, data)
	if len(kinds["branch"]) == 0 || len(kinds["leaf"]) < 4 || len(kinds["free"]) == 0 {
		t.Fatalf("the file should have branch, leaf and free pages: %v", kinds)
	}
	branch, leaf := kinds["branch"][0], kinds["leaf"][len(kinds["leaf"])/2]
	flip := func(d []byte, from, to int) {
		for i := from; i < to; i++ {
			d[i] ^= 0x5a
		}
	}
	// The meta page of the last commit.
	newest := 0
	m0, _ := readMeta(bytes.NewReader(data), 0)
	if m1, _ := readMeta(bytes.NewReader(data), ps); m1.txid > m0.txid {
		newest = 1
	}
	cases := []struct {
		name    string
		damage  func(d []byte) []byte
		corrupt bool   // Open fails with ErrCorrupt
		seq     uint64 // else: the checkpoint found
		warn    string // and the warning logged
	}{
		{"both meta pages", func(d []byte) []byte { flip(d, 16, 80); flip(d, ps+16, ps+80); return d }, true, 0, ""},
		{"the newest meta page", func(d []byte) []byte { flip(d, newest*ps+16, newest*ps+80); return d }, false, 1, "meta pages is invalid"},
		{"a leaf page header", func(d []byte) []byte { flip(d, leaf*ps, leaf*ps+16); return d }, true, 0, ""},
		{"a leaf page's elements", func(d []byte) []byte { flip(d, leaf*ps+16, leaf*ps+200); return d }, true, 0, ""},
		{"a whole leaf page", func(d []byte) []byte { flip(d, leaf*ps, leaf*ps+ps); return d }, true, 0, ""},
		{"a branch page", func(d []byte) []byte { flip(d, branch*ps+16, branch*ps+ps); return d }, true, 0, ""},
		{"a child pointer turned into a cycle", func(d []byte) []byte {
			// The second child of the branch page points back at the page.
			binary.NativeEndian.PutUint64(d[branch*ps+16+16+8:], uint64(branch))
			return d
		}, true, 0, ""},
		{"the freelist count", func(d []byte) []byte {
			fl := kinds["freelist"][0]
			binary.NativeEndian.PutUint16(d[fl*ps+10:], 0xFFFF)
			binary.NativeEndian.PutUint64(d[fl*ps+16:], 1<<40)
			return d
		}, true, 0, ""},
		{"truncated to half", func(d []byte) []byte { return d[:len(d)/2] }, true, 0, ""},
		{"truncated to one page", func(d []byte) []byte { return d[:ps] }, true, 0, ""},
		{"zero length", func(d []byte) []byte { return d[:0] }, false, 0, ""},
		{"zeroed", func(d []byte) []byte { return make([]byte, len(d)) }, true, 0, ""},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, c.damage(bytes.Clone(data)), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs testkit.LogBuffer
			err := guarded(t, func() error {
				db, err := Open(path, Options{Logger: logs.Logger(slog.LevelInfo)})
				if err != nil {
					return err
				}
				defer db.Close()
				info, err := db.LastCheckpoint()
				if err != nil {
					return err
				}
				if info.Seq != c.seq {
					t.Errorf("checkpoint %d, want %d", info.Seq, c.seq)
				}
				return readTables(db)
			})
			switch {
			case c.corrupt && !errors.Is(err, ErrCorrupt):
				t.Errorf("got %v, want an error wrapping ErrCorrupt", err)
			case !c.corrupt && err != nil:
				t.Errorf("got %v, want the file opened", err)
			}
			if !strings.Contains(logs.String(), c.warn) {
				t.Errorf("log %q, want %q", logs.String(), c.warn)
			}
		})
	}
}

// guarded runs fn on its own goroutine and fails the test if it has not
// returned within a minute (a hang) or if it panics.
func guarded(t testing.TB, fn func() error) (err error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		done <- fn()
	}()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		buf := make([]byte, 1<<20)
		t.Fatalf("hang: no result after a minute\n%s", buf[:runtime.Stack(buf, true)])
	}
	if err != nil && strings.HasPrefix(err.Error(), "panic: ") {
		t.Fatal(err)
	}
	return err
}

// readTables reads every table through the API, commits a change and runs
// Check, returning the first error.
func readTables(db *DB) error {
	names, err := db.Tables()
	if err != nil {
		return err
	}
	for _, name := range names {
		tb, err := db.Table(name, time.Hour)
		if err != nil {
			return err
		}
		if _, err := tb.Len(); err != nil {
			return err
		}
		if err := tb.Range(func(k, v []byte) bool { return true }); err != nil {
			return err
		}
		if _, _, err := tb.Get([]byte(name+"-key-01000"), nil); err != nil {
			return err
		}
		if err := tb.Put([]byte("new"), []byte("v")); err != nil {
			return err
		}
	}
	if _, err := db.Checkpoint(nil); err != nil {
		return err
	}
	return db.Check()
}

// TestRandomDamage flips random bytes of a state file, in many trials, and
// opens and reads it through the whole API: never a panic, never a hang
// (and never a crash of the test binary, which a tree walk round a cycle
// into a stack overflow would be). Half the trials aim at page and element
// headers, where a flip changes the structure rather than a value.
func TestRandomDamage(t *testing.T) {
	// A runaway recursion should fail in a moment, not after a gigabyte.
	defer debug.SetMaxStack(debug.SetMaxStack(64 << 20))
	dir := t.TempDir()
	data := goodFile(t, dir, 1500)
	const ps = 4096
	trials := 400
	if testing.Short() {
		trials = 100
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	var mu sync.Mutex
	outcomes := map[string]int{}
	for trial := range trials {
		d := bytes.Clone(data)
		for range 1 + rng.IntN(4) {
			off := rng.IntN(len(d))
			if trial%2 == 0 {
				off = rng.IntN(len(d)/ps)*ps + rng.IntN(pageHeaderSize+elemSize*16)
			}
			d[off] ^= byte(1 + rng.IntN(255))
		}
		path := filepath.Join(dir, "state.db")
		os.Remove(path + noteSuffix)
		if err := os.WriteFile(path, d, 0o600); err != nil {
			t.Fatal(err)
		}
		err := guarded(t, func() error {
			db, err := Open(path, Options{CacheBytes: 1 << 10})
			if err != nil {
				return err
			}
			defer db.Close()
			return readTables(db)
		})
		if t.Failed() {
			t.Fatalf("seed %d, trial %d", seed, trial)
		}
		mu.Lock()
		switch {
		case err == nil:
			outcomes["read whole"]++
		case errors.Is(err, ErrCorrupt):
			outcomes["ErrCorrupt"]++
		default:
			outcomes["other error"]++
		}
		mu.Unlock()
	}
	t.Logf("seed %d: %d trials: %v", seed, trials, outcomes)
	if outcomes["ErrCorrupt"] == 0 {
		t.Error("no trial found damage")
	}
}

// TestDamageFoundInUse damages a page under an open DB: the read that meets
// it fails with ErrCorrupt, the DB refuses to checkpoint, Close leaves a
// note, and the next Open reports the file damaged until MoveAside has put
// it away; then Open starts an empty file.
func TestDamageFoundInUse(t *testing.T) {
	dir := t.TempDir()
	data := goodFile(t, dir, 2000)
	const ps = 4096
	kinds := pageKinds(t, data)
	path := filepath.Join(dir, "state.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, Options{CacheBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	tb := mustTable(t, db, "op1.window", time.Hour)
	// Zero every leaf page on disk; the map shows the change at once.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range kinds["leaf"] {
		if _, err := f.WriteAt(make([]byte, ps), int64(id)*ps); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	_, _, err = tb.Get([]byte("op1.window-key-00042"), nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get over a damaged page: %v, want ErrCorrupt", err)
	}
	if err := db.Damaged(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Damaged: %v, want ErrCorrupt", err)
	}
	if _, err := db.Checkpoint(nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Checkpoint after damage: %v, want ErrCorrupt", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "found damaged while in use") {
		t.Fatalf("Open after damage in use: %v, want ErrCorrupt from the note", err)
	}
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	aside, err := MoveAside(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := path + ".20250304T050607Z.damaged"; aside != want {
		t.Errorf("moved to %s, want %s", aside, want)
	}
	if st, err := os.Stat(aside); err != nil || st.Size() < int64(len(data)) {
		t.Errorf("the copy moved aside: %v, want the damaged file kept", err)
	}
	db = openDB(t, path, 0, nil)
	if info, _ := db.LastCheckpoint(); info.Seq != 0 {
		t.Errorf("new file: checkpoint %d, want 0", info.Seq)
	}
}

// TestMoveAsideKeepsTheNewest moves a file aside more often than MaxAside:
// the oldest copies go, the names sort by time.
func TestMoveAsideKeepsTheNewest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var moved []string
	for i := range MaxAside + 3 {
		if err := os.WriteFile(path, []byte{byte(i)}, 0o600); err != nil {
			t.Fatal(err)
		}
		// Two in the same second take a counter.
		got, err := MoveAside(path, now.Add(time.Duration(i/2)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		moved = append(moved, got)
	}
	kept, err := AsideFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := moved[len(moved)-MaxAside:]; !slices.Equal(kept, want) {
		t.Errorf("kept %v, want %v", kept, want)
	}
	if got, err := MoveAside(path, now); got != "" || err != nil {
		t.Errorf("moving a missing file: %q, %v; want nothing done", got, err)
	}
}

// FuzzVerify feeds arbitrary bytes to the structure check that guards
// Open: it must return, without a panic, and accept or reject them.
func FuzzVerify(f *testing.F) {
	// Small seeds: the fuzzer slows down with inputs of hundreds of KiB.
	data := goodFile(f, f.TempDir(), 40)
	f.Add(data)
	f.Add(data[:len(data)/2])
	d := bytes.Clone(data)
	d[4096*2+20] ^= 0xff
	f.Add(d)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = verifyData(bytes.NewReader(b), int64(len(b)))
	})
}
