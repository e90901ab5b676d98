package state

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestDropTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 1<<20, nil)
	t1 := mustTable(t, db, "op1.window", time.Hour)
	t2 := mustTable(t, db, "op2.count", 0)
	_ = t1.Put([]byte("a"), []byte("1"))
	_ = t2.Put([]byte("b"), []byte("2"))
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	_ = t1.Put([]byte("c"), []byte("3")) // dirty when dropped
	if err := db.DropTable("op1.window"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := t1.Get([]byte("a"), nil); !errors.Is(err, ErrTableDropped) {
		t.Errorf("Get on a dropped table = %v, want ErrTableDropped", err)
	}
	if _, err := db.Table("op1.window", time.Hour); !errors.Is(err, ErrTableDropped) {
		t.Errorf("Table(dropped name) before the checkpoint = %v, want ErrTableDropped", err)
	}
	if names, _ := db.Tables(); !slices.Equal(names, []string{"op2.count"}) {
		t.Errorf("Tables = %v, want [op2.count]", names)
	}
	if st := db.Stats(); st.Entries != 1 || st.DirtyEntries != 0 {
		t.Errorf("after the drop the cache holds %d entries, %d dirty; want 1, 0", st.Entries, st.DirtyEntries)
	}

	// A crash before the checkpoint leaves the table whole.
	_ = db.Close()
	db = openDB(t, path, 1<<20, nil)
	if names, _ := db.Tables(); !slices.Equal(names, []string{"op1.window", "op2.count"}) {
		t.Errorf("after reopen without checkpoint Tables = %v, want both", names)
	}
	if err := db.DropTable("op1.window"); err != nil {
		t.Fatal(err)
	}
	if err := db.DropTable("never.existed"); err != nil {
		t.Errorf("DropTable of a missing table = %v, want nil", err)
	}
	if _, err := db.Checkpoint(nil); err != nil {
		t.Fatal(err)
	}
	t1 = mustTable(t, db, "op1.window", time.Hour)
	if got := dump(t, t1); len(got) != 0 {
		t.Errorf("re-created table holds %v, want nothing", got)
	}
	_ = db.Close()
	db = openDB(t, path, 1<<20, nil)
	if names, _ := db.Tables(); !slices.Equal(names, []string{"op1.window", "op2.count"}) {
		t.Errorf("Tables = %v, want both (op1.window re-created empty)", names)
	}
	t1 = mustTable(t, db, "op1.window", time.Hour)
	if n, _ := t1.Len(); n != 0 {
		t.Errorf("re-created table: Len = %d, want 0", n)
	}
	if v, _ := get(t, mustTable(t, db, "op2.count", 0), "b"); v != "2" {
		t.Errorf("other table: Get(b) = %q, want 2", v)
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
}
