package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestCommitFailure makes a commit fail (bbolt refuses to grow the file past
// MaxSize, as it would on a full disk) and checks that the failure is
// final, that nothing of it reached the file, and that the cache still
// serves the uncommitted values until the DB is reopened.
func TestCommitFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 1<<20, nil)
	tb := mustTable(t, db, "t", 0)
	_ = tb.Put([]byte("kept"), []byte("1"))
	if _, err := db.Checkpoint(map[string][]byte{"m": []byte("1")}); err != nil {
		t.Fatal(err)
	}
	// Reopen the file under the DB with a size limit.
	if err := db.bolt.Close(); err != nil {
		t.Fatal(err)
	}
	var err error
	db.bolt, err = bolt.Open(path, 0o600, &bolt.Options{MaxSize: 1 << 20, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<10)
	for i := range 32 {
		_ = tb.Put([]byte(fmt.Sprint("big", i)), big)
	}
	_ = tb.Put([]byte("kept"), []byte("2"))
	if _, err := db.Checkpoint(map[string][]byte{"m": []byte("2")}); err == nil {
		t.Fatal("checkpoint past MaxSize succeeded")
	}
	if _, err := db.Checkpoint(nil); !errors.Is(err, ErrBroken) {
		t.Errorf("checkpoint after a failed one = %v, want ErrBroken", err)
	}
	if v, _ := get(t, tb, "kept"); v != "2" {
		t.Errorf("Get(kept) after the failed commit = %q, want the cached %q", v, "2")
	}
	info, _ := db.LastCheckpoint()
	if info.Seq != 1 || string(info.Meta["m"]) != "1" {
		t.Errorf("LastCheckpoint = seq %d meta %q, want 1, %q", info.Seq, info.Meta["m"], "1")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, 1<<20, nil)
	tb = mustTable(t, db, "t", 0)
	if v, _ := get(t, tb, "kept"); v != "1" {
		t.Errorf("after reopen Get(kept) = %q, want the checkpointed %q", v, "1")
	}
	if _, ok := get(t, tb, "big0"); ok {
		t.Error("after reopen a key of the failed checkpoint is there")
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
}

// TestConcurrentUse runs writers, readers, Range and checkpoints at once
// under a tiny budget, for the race detector, and then checks the result
// against what the writers wrote.
func TestConcurrentUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 4<<10, nil)
	const writers, keys, rounds = 3, 200, 30
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		tb := mustTable(t, db, fmt.Sprint("w", w), 0)
		wg.Go(func() {
			for r := range rounds {
				for k := range keys {
					key := []byte(fmt.Sprint("k", k))
					if _, _, err := tb.Get(key, nil); err != nil {
						t.Error(err)
						return
					}
					if err := tb.Put(key, []byte(fmt.Sprint(r))); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	var bg sync.WaitGroup
	bg.Go(func() {
		tb := mustTable(t, db, "w0", 0)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := tb.Range(func(k, v []byte) bool { return true }); err != nil {
				t.Error(err)
				return
			}
		}
	})
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, err := db.Prepare(nil)
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
	wg.Wait()
	close(stop)
	bg.Wait()
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	db = openDB(t, path, 4<<10, nil)
	for w := range writers {
		tb := mustTable(t, db, fmt.Sprint("w", w), 0)
		got := dump(t, tb)
		if len(got) != keys {
			t.Errorf("table w%d: %d keys, want %d", w, len(got), keys)
		}
		for k, v := range got {
			if v != fmt.Sprint(rounds-1) {
				t.Errorf("table w%d: %s = %s, want %d", w, k, v, rounds-1)
			}
		}
	}
}
