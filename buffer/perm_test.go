package buffer_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pspf/pspf-edge/buffer"
)

// withUmask runs the test under umask mask, restoring the process's after.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// checkModes fails the test for every directory under root with a mode
// bit beyond 0750 and every file with one beyond 0640, and returns how
// many files it looked at.
func checkModes(t *testing.T, root string) int {
	t.Helper()
	files := 0
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, err := d.Info()
		if err != nil {
			t.Fatal(err)
		}
		allowed := os.FileMode(0o640)
		if d.IsDir() {
			allowed = 0o750
		} else {
			files++
		}
		if extra := fi.Mode().Perm() &^ allowed; extra != 0 {
			t.Errorf("%s: mode %v, want at most %v", p, fi.Mode().Perm(), allowed)
		}
		return nil
	})
	return files
}

// TestFileModesUnderUmask0: under umask 0 the log's directory is 0750 and
// its files (segments, cursors, SEQUENCE, LOCK) 0640, never readable by
// others; a log an older version left 0755/0644 is narrowed when opened.
// Before, they were 0755 and 0644.
func TestFileModesUnderUmask0(t *testing.T) {
	withUmask(t, 0)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "log")
	l, err := buffer.Open(dir, buffer.Options{Sync: buffer.SyncBatch, SegmentBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1000)
	var last uint64
	for range 20 { // several segments
		if last, err = l.Append(ctx, [][]byte{payload}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(ctx, last); err != nil {
		t.Fatal(err)
	}
	r, err := l.Reader("sink")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := r.Read(ctx, make([]buffer.Record, 0, 4), 1<<20)
	if err != nil || len(recs) == 0 {
		t.Fatalf("read: %d records, %v", len(recs), err)
	}
	if err := r.Ack(recs[len(recs)-1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := checkModes(t, dir); n < 4 {
		t.Errorf("looked at %d files, want segments, a cursor, SEQUENCE and LOCK", n)
	}

	// A log left by an older version.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Chmod(filepath.Join(dir, e.Name()), 0o644)
	}
	l, err = buffer.Open(dir, buffer.Options{Sync: buffer.SyncBatch, SegmentBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	checkModes(t, dir)
}
