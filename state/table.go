package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MaxTableNameLen is the longest table name. Names are operator ids such as
// "op3.window" and end up in bucket names, logs and metrics.
const MaxTableNameLen = 128

// boltTable is the Table of a DB: a write-back cache in front of one bbolt
// bucket (and its TTL index). It is safe for concurrent use.
type boltTable struct {
	db        *DB
	name      string
	data, idx []byte // bucket names
	ttl       int64  // nanoseconds; 0: keys never expire
	m         map[string]*entry
	diskCount int  // keys in the committed file
	dropped   bool // by DB.DropTable
}

// Table returns the table called name, creating it if needed. A ttl > 0
// expires keys not written for ttl (see the package doc); 0 keeps keys until
// deleted. Calling Table again with the same name returns the same Table;
// with a different ttl it fails with ErrTableTTL. Opening an existing table
// with a TTL for the first time indexes its keys by write time, which reads
// the whole table once. Table runs a bbolt write transaction that only
// creates buckets or derived index entries (never state changes); it may
// wait for a running checkpoint commit, holding the cache lock meanwhile, so
// open tables when a pipeline starts, not on its hot path. Names are 1 to
// MaxTableNameLen bytes of [A-Za-z0-9._-].
func (db *DB) Table(name string, ttl time.Duration) (Table, error) {
	t, err := db.table(name, ttl)
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (db *DB) table(name string, ttl time.Duration) (*boltTable, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if ttl < 0 {
		return nil, fmt.Errorf("state: table %q: ttl must be >= 0, got %s", name, ttl)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, ErrClosed
	}
	if _, ok := db.drops[name]; ok {
		return nil, fmt.Errorf("state: table %q: until the next checkpoint commits: %w", name, ErrTableDropped)
	}
	if t, ok := db.tables[name]; ok {
		if t.ttl != ttlNanos(ttl) {
			return nil, fmt.Errorf("state: table %q has ttl %s, got %s: %w", name, time.Duration(t.ttl), ttl, ErrTableTTL)
		}
		return t, nil
	}
	t := &boltTable{
		db: db, name: name, ttl: ttlNanos(ttl), m: make(map[string]*entry),
		data: []byte("t/" + name), idx: []byte("x/" + name),
	}
	err := db.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(t.data)
		if err != nil {
			return err
		}
		t.diskCount = b.Stats().KeyN
		ix := tx.Bucket(t.idx)
		switch {
		case t.ttl == 0 && ix != nil:
			return tx.DeleteBucket(t.idx)
		case t.ttl > 0 && ix == nil:
			if ix, err = tx.CreateBucket(t.idx); err != nil {
				return err
			}
			return b.ForEach(func(k, v []byte) error {
				wt, _, _, err := checkStored(k, v, db.legacyBound)
				if err != nil {
					return err
				}
				return ix.Put(indexKey(nil, uint64(wt), k), nil)
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: table %q: %w", name, err)
	}
	db.tables[name] = t
	return t, nil
}

func checkName(name string) error {
	if len(name) == 0 || len(name) > MaxTableNameLen {
		return fmt.Errorf("state: table name %q: must be 1 to %d bytes: %w", name, MaxTableNameLen, ErrTableName)
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("state: table name %q: byte %q is not in [A-Za-z0-9._-]: %w", name, c, ErrTableName)
		}
	}
	return nil
}

// usable returns ErrClosed or ErrTableDropped, or nil. Requires db.mu.
func (t *boltTable) usable() error {
	switch {
	case t.db.closed:
		return ErrClosed
	case t.dropped:
		return fmt.Errorf("state: table %q: %w", t.name, ErrTableDropped)
	}
	return nil
}

// DropTable deletes the table called name, for an operator removed or
// changed by a reload. Its Table, if open, fails from now on with
// ErrTableDropped and its cached entries are released at once; its data is
// deleted from the file by the next checkpoint, in the same transaction as
// the rest of that checkpoint, so a crash before it leaves the table whole.
// Until that checkpoint has committed, Table(name) fails with
// ErrTableDropped. Dropping a table that does not exist is not an error.
// After Close it returns ErrClosed.
func (db *DB) DropTable(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	if t := db.tables[name]; t != nil {
		t.dropped = true
		delete(db.tables, name)
		for _, e := range t.m {
			if e.dirty {
				db.dirtyB -= e.charge()
				db.nDirty--
			} else {
				db.lruUnlink(e)
			}
			db.used -= e.charge()
			db.nEntries--
		}
		t.m = nil // queued entries stay in db.dirty until Prepare skips them
	}
	if _, ok := db.drops[name]; !ok {
		db.drops[name] = false
	}
	return nil
}

// Tables returns the names of the tables in the file and of those opened
// since, sorted, without the dropped ones. After Close it returns ErrClosed.
func (db *DB) Tables() ([]string, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, ErrClosed
	}
	names := make(map[string]bool)
	for name := range db.tables {
		names[name] = true
	}
	err := db.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(b []byte, _ *bolt.Bucket) error {
			if name, ok := strings.CutPrefix(string(b), "t/"); ok {
				names[name] = true
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: tables: %w", err)
	}
	var out []string
	for name := range names {
		if _, dropped := db.drops[name]; !dropped {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Name returns the table's name.
func (t *boltTable) Name() string { return t.name }

// TTL returns the table's TTL (0: none).
func (t *boltTable) TTL() time.Duration { return time.Duration(t.ttl) }

func (t *boltTable) checkKey(op string, key []byte) error {
	if len(key) == 0 || len(key) > MaxKeySize {
		return fmt.Errorf("state: table %q: %s: key is %d bytes, want 1 to %d: %w", t.name, op, len(key), MaxKeySize, ErrKeySize)
	}
	return nil
}

// expired reports whether a stored value (header included) has outlived the
// table's TTL.
func (t *boltTable) expired(stored []byte) bool {
	return t.ttl > 0 && wtimeOf(stored) <= t.db.nowNanos()-t.ttl
}

// Get appends the value of key to dst and returns the extended slice and
// true, or dst and false when the key is absent or expired. The returned
// slice is the caller's; key is not retained. A cache hit does not allocate
// when dst has room. A miss reads the file (a short bbolt read transaction)
// while holding the cache lock, and caches the result, present or absent.
// After Close it returns ErrClosed.
func (t *boltTable) Get(key, dst []byte) ([]byte, bool, error) {
	if err := t.checkKey("get", key); err != nil {
		return dst, false, err
	}
	db := t.db
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := t.usable(); err != nil {
		return dst, false, err
	}
	e := t.m[string(key)]
	if e != nil {
		db.hits++
		db.touch(e)
	} else {
		db.misses++
		var err error
		if e, err = t.load(key); err != nil {
			return dst, false, err
		}
		defer db.evict()
	}
	if e.absent() || t.expired(e.val) {
		return dst, false, nil
	}
	return append(dst, e.val[hdr:]...), true, nil
}

// load reads key from the file into a new clean entry. Requires db.mu.
func (t *boltTable) load(key []byte) (*entry, error) {
	e := &entry{key: string(key), t: t, disk: diskNo}
	err := t.db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(t.data)
		if b == nil {
			return nil
		}
		v := b.Get(key)
		if v == nil {
			return nil
		}
		wt, body, legacy, err := checkStored(key, v, t.db.legacyBound)
		if err != nil {
			return err
		}
		e.val = appendCached(valBuf(hdr+len(body)), v, wt, body, legacy)
		e.disk, e.diskT = diskYes, wt
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: table %q: get %s: %w", t.name, showKey(key), err)
	}
	t.db.insert(e)
	return e, nil
}

// Put sets key to val in the cache; the change reaches the file with the
// next checkpoint. Put copies key and val: the caller may reuse both. It
// does not read the file, and does not allocate when the key is cached and
// its buffer has room. It never blocks on the disk: over budget, it evicts
// clean entries, and if dirty entries alone pass half of the budget it
// signals Pressure. After Close it returns ErrClosed.
func (t *boltTable) Put(key, val []byte) error {
	if err := t.checkKey("put", key); err != nil {
		return err
	}
	if len(val) > MaxValueSize {
		return fmt.Errorf("state: table %q: put %s: value is %d bytes, limit %d: %w", t.name, showKey(key), len(val), MaxValueSize, ErrValueSize)
	}
	db := t.db
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	e := t.m[string(key)]
	if e == nil {
		e = &entry{key: string(key), t: t, disk: diskUnknown}
		db.insert(e)
	}
	copy(db.setVal(e, db.nowNanos(), len(val), false), val)
	db.markDirty(e)
	db.evict()
	return nil
}

// Delete removes key, in the cache at once and in the file with the next
// checkpoint. Deleting an absent key is not an error. Delete does not read
// the file and does not retain key. After Close it returns ErrClosed.
func (t *boltTable) Delete(key []byte) error {
	if err := t.checkKey("delete", key); err != nil {
		return err
	}
	db := t.db
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	e := t.m[string(key)]
	switch {
	case e == nil:
		e = &entry{key: string(key), t: t, disk: diskUnknown}
		db.insert(e)
	case e.absent() && (e.dirty || e.disk == diskNo):
		return nil // already deleted
	}
	db.setVal(e, 0, 0, true)
	db.markDirty(e)
	db.evict()
	return nil
}

// Range calls fn for every live, unexpired key of the table in byte order of
// keys, with the cache and the file merged, until fn returns false. Keys
// changed before Range was called are seen as they were then; a key changed
// while Range runs (by fn or anyone else) may be seen with its old or its new
// value. k and v are valid only during the call and must not be modified.
// fn may call any method of the DB and its tables except Close: Range reads
// the file in chunks, each in a short read transaction, and holds nothing
// while fn runs. Its memory is a copy of the table's dirty entries plus one
// chunk. After Close it returns ErrClosed.
func (t *boltTable) Range(fn func(k, v []byte) bool) error {
	db := t.db
	var ovs []overlay
	db.mu.Lock()
	if err := t.usable(); err != nil {
		db.mu.Unlock()
		return err
	}
	for _, e := range t.m {
		if e.dirty {
			var v []byte
			if e.val != nil {
				// Not the checksum bytes, which a running checkpoint
				// may be writing (seal).
				v = make([]byte, len(e.val))
				copy(v[:8], e.val)
				copy(v[hdr:], e.val[hdr:])
			}
			ovs = append(ovs, overlay{[]byte(e.key), v})
		}
	}
	now := db.nowNanos()
	db.mu.Unlock()
	slices.SortFunc(ovs, func(a, b overlay) int { return bytes.Compare(a.k, b.k) })

	live := func(v []byte) bool {
		return v != nil && (t.ttl == 0 || wtimeOf(v) > now-t.ttl)
	}
	fc := &fileChunks{t: t}
	dk, dv, err := fc.peek()
	for err == nil && (dk != nil || len(ovs) > 0) {
		var k, v []byte
		switch cmp := compareNext(dk, ovs); {
		case cmp < 0: // file only
			k, v = dk, dv
			fc.pop()
		case cmp == 0: // overlay replaces the file
			k, v = ovs[0].k, ovs[0].v
			ovs = ovs[1:]
			fc.pop()
		default: // overlay only
			k, v = ovs[0].k, ovs[0].v
			ovs = ovs[1:]
		}
		if live(v) && !fn(k, v[hdr:]) {
			return nil
		}
		dk, dv, err = fc.peek()
	}
	return err
}

// rangeChunk is the number of file entries Range copies per read
// transaction.
const rangeChunk = 256

// fileChunks reads a table's entries from the file in key order, a chunk at
// a time, each chunk copied in its own read transaction.
type fileChunks struct {
	t     *boltTable
	buf   []overlay // rest of the current chunk
	arena []byte    // backing store of buf, reused per chunk
	last  []byte    // last key read
	done  bool      // the file has no entries after last
}

// peek returns the next entry, or nil when there is none.
func (f *fileChunks) peek() (k, v []byte, err error) {
	if len(f.buf) == 0 && !f.done {
		if err := f.fill(); err != nil {
			return nil, nil, err
		}
	}
	if len(f.buf) == 0 {
		return nil, nil, nil
	}
	return f.buf[0].k, f.buf[0].v, nil
}

func (f *fileChunks) pop() { f.buf = f.buf[1:] }

func (f *fileChunks) fill() error {
	t, db := f.t, f.t.db
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	f.buf, f.arena = f.buf[:0], f.arena[:0]
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(t.data)
		if b == nil {
			f.done = true
			return nil
		}
		c := b.Cursor()
		var k, v []byte
		if f.last == nil {
			k, v = c.First()
		} else if k, v = c.Seek(f.last); k != nil && bytes.Equal(k, f.last) {
			k, v = c.Next()
		}
		for ; k != nil && len(f.buf) < rangeChunk; k, v = c.Next() {
			wt, body, legacy, err := checkStored(k, v, db.legacyBound)
			if err != nil {
				return err
			}
			start := len(f.arena)
			f.arena = appendCached(append(f.arena, k...), v, wt, body, legacy)
			kv := f.arena[start:]
			f.buf = append(f.buf, overlay{kv[:len(k):len(k)], kv[len(k):]})
			f.last = append(f.last[:0], k...)
		}
		f.done = k == nil
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: table %q: range: %w", t.name, err)
	}
	return nil
}

// overlay is a dirty entry copied for Range; v is nil for a deleted key.
type overlay struct{ k, v []byte }

// compareNext compares the next file key with the next overlay key; a
// missing side sorts last.
func compareNext(dk []byte, ovs []overlay) int {
	switch {
	case len(ovs) == 0:
		return -1
	case dk == nil:
		return 1
	}
	return bytes.Compare(dk, ovs[0].k)
}

// Len returns the number of keys in the table, cache and file merged.
// Keys whose TTL has passed count until the checkpoint that removes them.
// It waits for a running checkpoint commit (so it must not be called by the
// holder of a Pending) and may read the file for keys written blind. After
// Close it returns ErrClosed.
func (t *boltTable) Len() (int, error) {
	db := t.db
	db.ckpt <- struct{}{}
	defer func() { <-db.ckpt }()
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := t.usable(); err != nil {
		return 0, err
	}
	n := t.diskCount
	var unknown []*entry
	for _, e := range t.m {
		if !e.dirty {
			continue
		}
		switch {
		case e.disk == diskUnknown:
			unknown = append(unknown, e)
		case e.disk == diskYes && e.absent():
			n--
		case e.disk == diskNo && !e.absent():
			n++
		}
	}
	if len(unknown) == 0 {
		return n, nil
	}
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(t.data)
		for _, e := range unknown {
			e.disk = diskNo
			if b != nil && b.Get([]byte(e.key)) != nil {
				e.disk = diskYes
			}
			switch {
			case e.disk == diskYes && e.absent():
				n--
			case e.disk == diskNo && !e.absent():
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("state: table %q: len: %w", t.name, err)
	}
	return n, nil
}

// indexKey appends the TTL index key of k written at wtime to dst.
func indexKey(dst []byte, wtime uint64, k []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, wtime)
	return append(dst, k...)
}

// showKey formats a key for an error message, cut to 32 bytes.
func showKey(k []byte) string {
	if len(k) > 32 {
		return fmt.Sprintf("%x...(%d bytes)", k[:32], len(k))
	}
	return fmt.Sprintf("%x", k)
}
