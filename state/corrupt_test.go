package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDamagedFile damages each page of a state file in turn (every byte
// flipped) and checks that opening and reading it returns errors, never a
// panic: the agent must not crash-loop on a damaged file. Where the damage
// shows, the error wraps ErrCorrupt (or comes from bbolt's own validation
// of the meta pages at open).
func TestDamagedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db := openDB(t, path, 0, nil)
	for _, name := range []string{"op1.window", "op2.dedup"} {
		tb := mustTable(t, db, name, time.Hour)
		for i := range 1500 {
			_ = tb.Put([]byte(fmt.Sprintf("%s-key-%05d", name, i)), make([]byte, 60))
		}
	}
	if _, err := db.Checkpoint(map[string][]byte{"cursor": {1}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt grows the file in large steps: keep only the pages in use.
	const page = 4096
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	data = data[:(end+page-1)/page*page]
	damaged, corrupt := 0, 0
	for off := 0; off < len(data); off += page {
		d := append([]byte(nil), data...)
		for j := off; j < off+page && j < len(d); j++ {
			d[j] ^= 0xa5
		}
		p := filepath.Join(dir, fmt.Sprintf("damaged%d.db", off/page))
		if err := os.WriteFile(p, d, 0o600); err != nil {
			t.Fatal(err)
		}
		err := readAll(p)
		if err != nil {
			damaged++
			if errors.Is(err, ErrCorrupt) {
				corrupt++
			}
		}
		_ = os.Remove(p)
	}
	t.Logf("%d pages: damage found in %d (%d as ErrCorrupt), no panic", len(data)/page, damaged, corrupt)
	if damaged == 0 {
		t.Error("no damaged page was noticed")
	}
}

// readAll opens the file and reads everything in it through the API; it
// returns the first error.
func readAll(path string) error {
	db, err := Open(path, Options{CacheBytes: 1 << 10})
	if err != nil {
		return err
	}
	defer db.Close()
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
		if _, _, err := tb.Get([]byte(name+"-key-00750"), nil); err != nil {
			return err
		}
		_ = tb.Put([]byte("new"), []byte("v"))
	}
	if _, err := db.Checkpoint(nil); err != nil {
		return err
	}
	return db.Check()
}
