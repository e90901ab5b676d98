package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// MaxMetaKeySize is the longest checkpoint metadata key.
const MaxMetaKeySize = 1024

// fillPercent is where bbolt splits the pages of tables (its default, 0.5,
// suits random inserts; checkpoints write sorted keys).
const fillPercent = 0.9

// CheckpointStats describes one committed checkpoint.
type CheckpointStats struct {
	Seq          uint64        // sequence number of this checkpoint
	Time         time.Time     // the state clock when it was prepared (package doc, TTL)
	Written      int           // keys put
	Deleted      int           // keys deleted by Delete
	Expired      int           // keys deleted because their TTL had passed
	BytesWritten int64         // bytes of pages the transaction wrote, meta page included
	Prepare      time.Duration // time the cache lock was held to collect dirty entries
	Commit       time.Duration // bbolt transaction, both fsyncs included
}

// boltPending is the Pending of a DB: the dirty entries of all tables as
// they were at Prepare, plus the metadata.
type boltPending struct {
	db      *DB
	tables  []*pendTable
	meta    map[string][]byte
	drops   []string // tables to delete
	seq     uint64
	now     int64
	prepDur time.Duration
	done    bool
}

type pendTable struct {
	t     *boltTable
	ents  []snap
	order []int32 // indexes into ents in key order, set by sort
}

// snap is a dirty entry as captured by Prepare. val is the entry's buffer,
// pinned (never written into) until the commit ends; nil for a delete. key,
// disk and diskT are copied from the entry so that sorting and writing do
// not chase the entry pointer.
type snap struct {
	key   string
	val   []byte
	e     *entry
	diskT int64
	ver   uint32
	disk  uint8
}

// Checkpoint is Prepare followed by Commit: it writes every change made
// since the last checkpoint, the due TTL expiries and meta in one bbolt
// transaction. See Prepare and Commit.
func (db *DB) Checkpoint(meta map[string][]byte) (CheckpointStats, error) {
	p, err := db.prepare(meta)
	if err != nil {
		return CheckpointStats{}, err
	}
	return p.Commit()
}

// Prepare captures a checkpoint: the current dirty entries of every table
// and meta, which replaces the metadata of the previous checkpoint
// entirely (nil means none). meta is copied. It waits for the previous
// Pending to end and holds the cache lock only to collect the dirty entries
// (no copy of keys or values), so the caller can pause its operators,
// Prepare, resume them, then Commit: the checkpoint holds exactly the state
// at Prepare. After Close it returns ErrClosed; after a failed commit,
// ErrBroken; once the DB has met damage (DB.Damaged), that error, which
// wraps ErrCorrupt.
func (db *DB) Prepare(meta map[string][]byte) (Pending, error) {
	p, err := db.prepare(meta)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (db *DB) prepare(meta map[string][]byte) (*boltPending, error) {
	mcopy, err := copyMeta(meta)
	if err != nil {
		return nil, err
	}
	db.ckpt <- struct{}{}
	start := time.Now()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		<-db.ckpt
		return nil, ErrClosed
	}
	if db.broken != nil {
		<-db.ckpt
		return nil, fmt.Errorf("%w (reopen to recover): %w", ErrBroken, db.broken)
	}
	if dmg := db.Damaged(); dmg != nil {
		<-db.ckpt
		return nil, fmt.Errorf("state: no checkpoint from a damaged file: %w", dmg)
	}
	p := &boltPending{db: db, meta: mcopy, seq: db.last.Seq + 1, now: db.nowNanos()}
	for name, held := range db.drops {
		if !held {
			db.drops[name] = true
			p.drops = append(p.drops, name)
		}
	}
	counts := make(map[*boltTable]int)
	for _, e := range db.dirty {
		if !e.t.dropped {
			counts[e.t]++
		}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	// The pending tables' entries share the scratch array (db.ckpt is held).
	db.scratch.snaps = grow(db.scratch.snaps, total)
	byTable := make(map[*boltTable]*pendTable, len(counts))
	off := 0
	for t, n := range counts {
		pt := &pendTable{t: t, ents: db.scratch.snaps[off : off : off+n]}
		off += n
		byTable[t] = pt
		p.tables = append(p.tables, pt)
	}
	for _, e := range db.dirty {
		if e.t.dropped {
			continue
		}
		pt := byTable[e.t]
		e.queued = false
		e.pinned = e.val != nil
		pt.ents = append(pt.ents, snap{key: e.key, val: e.val, e: e, diskT: e.diskT, ver: e.ver, disk: e.disk})
	}
	// Reuse the queue's array unless a burst made it much larger than this
	// checkpoint needed: a steady 100k changed keys per checkpoint keeps its
	// array instead of growing a new one every time.
	if cap(db.dirty) <= max(1<<16, 2*len(db.dirty)) {
		clear(db.dirty)
		db.dirty = db.dirty[:0]
	} else {
		db.dirty = nil
	}
	p.prepDur = time.Since(start)
	return p, nil
}

// Entries returns the number of changed keys the checkpoint will write,
// plus the tables it will drop.
func (p *boltPending) Entries() int { return p.nents() + len(p.drops) }

// nents returns the number of changed keys the checkpoint will write.
func (p *boltPending) nents() int {
	n := 0
	for _, pt := range p.tables {
		n += len(pt.ents)
	}
	return n
}

// Abort drops the prepared checkpoint: its entries stay dirty for the next
// one. Abort after Commit or Abort does nothing.
func (p *boltPending) Abort() {
	if p.done {
		return
	}
	p.done = true
	db := p.db
	db.mu.Lock()
	p.requeue()
	db.mu.Unlock()
	db.scratch.release(p.nents())
	<-db.ckpt
}

// requeue puts the captured entries and drops back for the next
// checkpoint. Requires db.mu.
func (p *boltPending) requeue() {
	db := p.db
	for _, name := range p.drops {
		db.drops[name] = false
	}
	for _, pt := range p.tables {
		if pt.t.dropped {
			continue
		}
		for _, s := range pt.ents {
			s.e.pinned = false
			if !s.e.queued {
				s.e.queued = true
				db.dirty = append(db.dirty, s.e)
			}
		}
	}
}

// Commit writes the prepared checkpoint in one bbolt transaction (data
// fsync, then meta page fsync) and blocks until it is durable; operators
// may keep using the tables meanwhile. On success the written entries that
// were not changed again since Prepare become clean and evictable. On
// failure nothing of the checkpoint is visible in the file, the entries stay
// dirty, and the DB refuses further checkpoints (ErrBroken): a failed fsync
// is never retried on the same data. Calling Commit twice returns an error.
func (p *boltPending) Commit() (CheckpointStats, error) {
	if p.done {
		return CheckpointStats{}, fmt.Errorf("state: checkpoint %d: already ended", p.seq)
	}
	p.done = true
	db := p.db
	defer func() { <-db.ckpt }()
	defer db.scratch.release(p.nents()) // runs before the semaphore is released
	st := CheckpointStats{Seq: p.seq, Time: time.Unix(0, p.now), Prepare: p.prepDur}
	start := time.Now()
	expired, err := p.write(&st)
	st.Commit = time.Since(start)
	db.noteDamage(&err)

	db.mu.Lock()
	defer db.mu.Unlock()
	if err != nil {
		p.requeue()
		db.broken = err
		db.log.Error("state: checkpoint failed; state stays at the previous checkpoint", "seq", p.seq, "err", err)
		return st, fmt.Errorf("state: checkpoint %d: %w", p.seq, err)
	}
	for _, name := range p.drops {
		delete(db.drops, name)
	}
	for i, pt := range p.tables {
		if pt.t.dropped {
			continue // its entries left the cache's accounts with the drop
		}
		for _, s := range pt.ents {
			e := s.e
			e.pinned = false
			e.disk = diskNo
			if s.val != nil {
				e.disk, e.diskT = diskYes, wtimeOf(s.val)
			}
			if e.ver == s.ver && !e.queued {
				db.markClean(e)
			}
		}
		for _, k := range expired[i] {
			e := pt.t.m[k]
			if e == nil {
				continue
			}
			e.disk = diskNo
			if !e.dirty && !e.absent() {
				db.setVal(e, 0, 0, true)
			}
		}
	}
	db.last = CheckpointInfo{Seq: p.seq, Time: st.Time, Meta: p.meta}
	db.boundStored = true
	db.warned = false
	db.evict()
	return st, nil
}

// write runs the bbolt transaction. It returns, per pending table, the keys
// removed by TTL expiry. Tables with TTL but no dirty entry are expired too.
func (p *boltPending) write(st *CheckpointStats) (expired [][]string, err error) {
	defer guard(&err)()
	db := p.db
	// Every table with a TTL takes part, for its expiries.
	db.mu.Lock()
	for _, t := range db.tables {
		if t.ttl > 0 && !slices.ContainsFunc(p.tables, func(pt *pendTable) bool { return pt.t == t }) {
			p.tables = append(p.tables, &pendTable{t: t})
		}
	}
	db.mu.Unlock()
	db.scratch.order = grow(db.scratch.order, p.nents())
	off := 0
	for _, pt := range p.tables {
		pt.sort(&db.scratch, off)
		off += len(pt.ents)
	}
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	for _, name := range p.drops {
		for _, b := range [][]byte{[]byte("t/" + name), []byte("x/" + name)} {
			if tx.Bucket(b) == nil {
				continue
			}
			if err := tx.DeleteBucket(b); err != nil {
				return nil, fmt.Errorf("drop table %q: %w", name, err)
			}
		}
	}
	expired = make([][]string, len(p.tables))
	counts := make([]int, len(p.tables)) // change of each table's key count
	for i, pt := range p.tables {
		if counts[i], expired[i], err = p.writeTable(tx, pt, st); err != nil {
			return nil, fmt.Errorf("table %q: %w", pt.t.name, err)
		}
	}
	if err := p.writeMeta(tx); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	ts := tx.Stats()
	st.BytesWritten = ts.GetPageAlloc() + int64(db.bolt.Info().PageSize)
	db.mu.Lock()
	for i, pt := range p.tables {
		pt.t.diskCount += counts[i]
	}
	db.mu.Unlock()
	return expired, nil
}

func (p *boltPending) writeTable(tx *bolt.Tx, pt *pendTable, st *CheckpointStats) (int, []string, error) {
	t := pt.t
	b, err := tx.CreateBucketIfNotExists(t.data)
	if err != nil {
		return 0, nil, err
	}
	// Keys are written in order, and overwritten in place far more often
	// than inserted: fuller pages mean fewer pages to write.
	b.FillPercent = fillPercent
	var idx *bolt.Bucket
	var arena []byte // index keys stay referenced by bbolt until the commit
	if t.ttl > 0 {
		if idx, err = tx.CreateBucketIfNotExists(t.idx); err != nil {
			return 0, nil, err
		}
		idx.FillPercent = fillPercent
		n := 0
		for _, s := range pt.ents {
			n += 8 + len(s.key)
		}
		arena = make([]byte, 0, n)
	}
	count := 0
	var tmp []byte
	for _, i := range pt.order {
		s := &pt.ents[i]
		k := unsafe.Slice(unsafe.StringData(s.key), len(s.key))
		// The file's version is known unless the key was written blind.
		had, oldT := s.disk == diskYes, uint64(s.diskT)
		if s.disk == diskUnknown {
			old := b.Get(k)
			if had = old != nil; had {
				wt, _, _, err := checkStored(k, old, t.db.legacyBound)
				if err != nil {
					return 0, nil, err
				}
				oldT = uint64(wt)
			}
		}
		if idx != nil && had {
			tmp = indexKey(tmp[:0], oldT, k)
			if err := idx.Delete(tmp); err != nil {
				return 0, nil, err
			}
		}
		if s.val == nil {
			if had {
				if err := b.Delete(k); err != nil {
					return 0, nil, err
				}
				count--
			}
			st.Deleted++
			continue
		}
		// The value is pinned: only the checksum bytes of its header are
		// written, which no other reader of the cache looks at.
		seal(k, s.val)
		if err := b.Put(k, s.val); err != nil {
			return 0, nil, err
		}
		if !had {
			count++
		}
		st.Written++
		if idx != nil {
			start := len(arena)
			arena = indexKey(arena, uint64(wtimeOf(s.val)), k)
			if err := idx.Put(arena[start:], nil); err != nil {
				return 0, nil, err
			}
		}
	}
	if idx == nil {
		return count, nil, nil
	}
	// Expire: the index is ordered by write time, so the due keys come first.
	cutoff := p.now - t.ttl
	var due [][]byte
	c := idx.Cursor()
	for ik, _ := c.First(); ik != nil; ik, _ = c.Next() {
		if len(ik) < 8 || int64(binary.BigEndian.Uint64(ik)) > cutoff {
			break
		}
		due = append(due, bytes.Clone(ik))
	}
	var expired []string
	for _, ik := range due {
		if err := idx.Delete(ik); err != nil {
			return 0, nil, err
		}
		k := ik[8:]
		v := b.Get(k)
		if v == nil {
			continue // stale index entry
		}
		wt, _, _, err := checkStored(k, v, t.db.legacyBound)
		if err != nil {
			return 0, nil, err
		}
		if uint64(wt) != binary.BigEndian.Uint64(ik) {
			continue // stale index entry
		}
		if err := b.Delete(k); err != nil {
			return 0, nil, err
		}
		count--
		st.Expired++
		expired = append(expired, string(k))
	}
	return count, expired, nil
}

func (p *boltPending) writeMeta(tx *bolt.Tx) error {
	mb, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	var stale [][]byte
	if err := mb.ForEach(func(k, _ []byte) error {
		if _, ok := p.meta[string(k)]; !ok {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range stale {
		if err := mb.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.meta)) {
		if err := mb.Put([]byte(k), p.meta[k]); err != nil {
			return err
		}
	}
	cb, err := tx.CreateBucketIfNotExists(bucketCkpt)
	if err != nil {
		return err
	}
	if !p.db.boundStored {
		if err := cb.Put(keyLegacy, binary.BigEndian.AppendUint64(nil, uint64(p.db.legacyBound))); err != nil {
			return err
		}
	}
	if err := cb.Put(keySeq, binary.BigEndian.AppendUint64(nil, p.seq)); err != nil {
		return err
	}
	return cb.Put(keyTime, binary.BigEndian.AppendUint64(nil, uint64(p.now)))
}
