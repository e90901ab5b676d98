package state

import "slices"

// EntryOverhead is the fixed charge of one cached entry against the budget,
// on top of its key and value bytes: the entry struct (about 80 bytes), its
// map slot and key string header (about 40 bytes) and allocator rounding.
const EntryOverhead = 144

// disk presence of an entry's key in the committed file.
const (
	diskUnknown uint8 = iota
	diskNo
	diskYes
)

// entry is one cached key. val holds the value as stored in the file with
// its checksum (value.go: the write time with sumFlag, the 4-byte
// checksum, the value), a value read from a file written before checksums
// included; it is nil when the entry records an absent key (a tombstone
// when dirty, a negative cache entry when clean). The checksum bytes are
// valid only once a checkpoint has written the value (seal): Put leaves
// them as they were, so that a key changed many times between two
// checkpoints is summed once.
type entry struct {
	key        string
	val        []byte
	t          *boltTable
	prev, next *entry // LRU list links; nil while dirty
	ver        uint32 // bumped by every change
	dirty      bool   // differs from the file
	queued     bool   // in db.dirty for the next checkpoint
	pinned     bool   // val is referenced by a pending checkpoint: never write into it
	disk       uint8  // presence of the key in the file
	diskT      int64  // write time of the file's version, when disk == diskYes
}

func (e *entry) absent() bool { return e.val == nil }

func (e *entry) writeTime() int64 { return wtimeOf(e.val) }

// valBuf returns an empty buffer for a cached value of n bytes whose
// capacity is the allocator's size class, so that the charge (cap) is what
// the buffer takes: a 20-byte value (8 bytes under a 12-byte header) takes
// 24.
func valBuf(n int) []byte { return slices.Grow([]byte(nil), n) }

func (e *entry) charge() int64 {
	return EntryOverhead + int64(len(e.key)) + int64(cap(e.val))
}

// The methods below require db.mu.

func (db *DB) lruUnlink(e *entry) {
	if e.next == nil {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (db *DB) lruFront(e *entry) {
	e.prev, e.next = &db.lru, db.lru.next
	e.next.prev = e
	db.lru.next = e
}

// touch records a use of a clean entry.
func (db *DB) touch(e *entry) {
	if e.dirty || db.lru.next == e {
		return
	}
	db.lruUnlink(e)
	db.lruFront(e)
}

// insert adds a new entry to its table and, when clean, to the LRU list.
func (db *DB) insert(e *entry) {
	e.t.m[e.key] = e
	db.used += e.charge()
	db.nEntries++
	if !e.dirty {
		db.lruFront(e)
	}
}

// setVal replaces the stored form of e (nil for absent), reusing e.val's
// buffer when it is neither pinned nor too small, and keeps the charges
// right. It returns the value part of the new buffer for the caller to fill.
func (db *DB) setVal(e *entry, wtime int64, n int, absent bool) []byte {
	old := e.charge()
	switch {
	case absent:
		e.val = nil
		e.pinned = false
	case e.pinned || cap(e.val) < hdr+n || cap(e.val) > 2*(hdr+n)+64:
		e.val = valBuf(hdr + n)[:hdr+n]
		e.pinned = false
	default:
		e.val = e.val[:hdr+n]
	}
	if !absent {
		putHeader(e.val, wtime)
	}
	d := e.charge() - old
	db.used += d
	if e.dirty {
		db.dirtyB += d
	}
	if absent {
		return nil
	}
	return e.val[hdr:]
}

// markDirty makes e dirty and queues it for the next checkpoint.
func (db *DB) markDirty(e *entry) {
	e.ver++
	if !e.dirty {
		db.lruUnlink(e)
		e.dirty = true
		db.dirtyB += e.charge()
		db.nDirty++
	}
	if !e.queued {
		e.queued = true
		db.dirty = append(db.dirty, e)
	}
}

// markClean makes a dirty entry clean and evictable.
func (db *DB) markClean(e *entry) {
	if !e.dirty {
		return
	}
	e.dirty = false
	db.dirtyB -= e.charge()
	db.nDirty--
	db.lruFront(e)
}

// evict drops least recently used clean entries until the cache is within
// budget or only dirty entries are left, and signals pressure when the dirty
// entries pass half of the budget.
func (db *DB) evict() {
	for db.used > db.budget {
		e := db.lru.prev
		if e == &db.lru {
			break
		}
		db.lruUnlink(e)
		delete(e.t.m, e.key)
		db.used -= e.charge()
		db.nEntries--
		db.evicted++
	}
	if db.dirtyB > db.budget/2 {
		select {
		case db.pressure <- struct{}{}:
		default:
		}
		if db.used > db.budget && !db.warned {
			db.warned = true
			db.log.Warn("state: dirty entries exceed the cache budget until the next checkpoint",
				"dirty_bytes", db.dirtyB, "budget", db.budget)
		}
	}
}
