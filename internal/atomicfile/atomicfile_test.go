package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cursor")
	for _, content := range []string{"first", "second, longer", ""} {
		if err := WriteDurable(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("got %q, %v; want %q", got, err, content)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("got %v, %v; want mode 0600", st.Mode(), err)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
}

// A write that fails leaves the old content and no temporary file.
func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cursor")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the file is renamed to: the rename fails.
	if err := os.Mkdir(path+"2", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path+"2", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path+"2", []byte("new"), 0o600); err == nil {
		t.Fatal("renaming over a non-empty directory: got nil error")
	}
	if _, err := os.Stat(path + "2.tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	if err := Write(filepath.Join(dir, "missing", "x"), []byte("new"), 0o600); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("in a missing directory: got %v, want ErrNotExist", err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SyncDir of a missing directory: got %v, want ErrNotExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("got %q, want old", got)
	}
}
