package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/pspf/pspf-edge/internal/atomicfile"
)

// Limits on keys and values, checked before anything is allocated.
const (
	// MaxKeySize is the longest key, in bytes. bbolt allows 32 KiB keys; the
	// TTL index prefixes each key with its 8-byte write time.
	MaxKeySize = bolt.MaxKeySize - 8

	// MaxValueSize is the longest value, in bytes. State values are
	// aggregates and window contents, not payload archives: one value larger
	// than this would on its own blow the memory budget of a small gateway.
	MaxValueSize = 16 << 20

	// DefaultCacheBytes is the cache budget used when Options.CacheBytes is 0.
	DefaultCacheBytes = 16 << 20

	// DefaultLockTimeout is the wait for the file lock when
	// Options.LockTimeout is 0.
	DefaultLockTimeout = 5 * time.Second
)

// initialMmap is the address space bbolt maps up front. Growing the map
// inside a commit re-reads every node the commit has touched and waits for
// all readers; 64 MiB of address space (not memory) avoids that for the
// state of most pipelines, even on 32-bit boards.
const initialMmap = 64 << 20

// Bucket names. Tables live in "t/<name>", their TTL index in "x/<name>".
var (
	bucketCkpt = []byte("ckpt")      // seq, time of the last checkpoint
	bucketMeta = []byte("ckpt.meta") // caller metadata of the last checkpoint
	keySeq     = []byte("seq")
	keyTime    = []byte("time")
	// keyLegacy holds the file's legacy bound (value.go), 8 bytes
	// big-endian, written by the first checkpoint that writes checksums.
	keyLegacy = []byte("legacy")
)

// Options configures Open. The zero value is valid: every field has a default.
type Options struct {
	// CacheBytes is the budget of the write-back cache, shared by all the
	// tables of the DB, in bytes (default DefaultCacheBytes). Dirty entries
	// may exceed it until the next checkpoint; see the package doc.
	CacheBytes int64

	// LockTimeout bounds the wait for the file lock held by another process
	// (default DefaultLockTimeout), so that a second agent on the same data
	// directory fails instead of hanging.
	LockTimeout time.Duration

	// Logger receives warnings (dirty data over budget) and checkpoint
	// failures. Nil discards them.
	Logger *slog.Logger

	// Now is the clock behind the state clock (default time.Now); see the
	// package doc, "TTL". Tests and the deterministic runner inject a
	// virtual clock.
	Now func() time.Time
}

// DB is the state file of one pipeline plus its cache. Open it with Open;
// it is safe for concurrent use. The caller's file lock on the data
// directory keeps other agents away; bbolt's own lock on the file is a
// second line.
type DB struct {
	bolt   *bolt.DB
	path   string
	opts   Options
	log    *slog.Logger
	budget int64

	// damaged is the first error wrapping ErrCorrupt that a call into bbolt
	// returned; see Damaged.
	damaged atomic.Pointer[error]

	// ckpt is a one-slot semaphore held from Prepare until Commit or Abort,
	// and by Close.
	ckpt chan struct{}
	// pressure is signalled (without blocking) when dirty bytes pass half of
	// the budget.
	pressure chan struct{}
	// scratch is used by the holder of ckpt.
	scratch scratch

	mu       sync.Mutex
	closed   bool
	broken   error // sticky failure of a checkpoint commit
	tables   map[string]*boltTable
	drops    map[string]bool // tables to delete: true once a pending checkpoint holds the drop
	lru      entry           // sentinel of the LRU list of clean entries; next is most recent
	dirty    []*entry        // dirty entries queued for the next checkpoint
	used     int64           // charge of all cached entries
	dirtyB   int64           // charge of dirty entries
	nEntries int
	nDirty   int
	hits     uint64
	misses   uint64
	evicted  uint64
	warned   bool // over-budget warning logged since the last checkpoint
	last     CheckpointInfo

	// clock is the state clock; see nowNanos.
	clock stateClock

	// legacyBound is the file's legacy bound (value.go), fixed at Open.
	legacyBound int64
	// boundStored says that the file records legacyBound (keyLegacy). Only
	// the holder of ckpt uses it.
	boundStored bool
}

// CheckpointInfo describes the last committed checkpoint.
type CheckpointInfo struct {
	// Seq numbers checkpoints from 1; 0 means there has been none.
	Seq uint64
	// Time is the state clock (package doc, TTL) when the checkpoint was
	// prepared; it ignores wall-clock jumps and the time the DB was closed.
	Time time.Time
	// Meta is the metadata passed to that checkpoint. The map is the
	// caller's own copy.
	Meta map[string][]byte
}

// Open opens or creates the state file at path (mode 0600), fsyncs its
// directory, and returns the DB. It blocks up to Options.LockTimeout while
// another process holds the file. bbolt always syncs: NoSync is never set.
// The freelist is synced by every commit (NoFreelistSync is not set):
// rebuilding it on open would walk the tree in a goroutine of bbolt's, where
// a damaged page's panic cannot be turned into ErrCorrupt (guard.go).
//
// Before bbolt maps the file, Open reads it through once and checks its
// structure (verify.go): a damaged file, one found damaged while in use
// (see Close), and one bbolt cannot open or read return an error wrapping
// ErrCorrupt, never a panic or a hang. Move it aside with MoveAside and
// Open again to start from an empty file. A missing or empty file is a new,
// empty state (LastCheckpoint's Seq is 0). A file with one invalid meta
// page (a commit torn by a power cut, or damage) opens at the other one,
// which may be the previous checkpoint, and a warning says so.
func Open(path string, opts Options) (*DB, error) {
	if opts.CacheBytes < 0 {
		return nil, fmt.Errorf("state: open %s: cache bytes must be >= 0, got %d", path, opts.CacheBytes)
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rep, err := checkFile(path, opts.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	if rep.badMeta != nil {
		log.Warn("state: one of the file's two meta pages is invalid (a commit torn by a power cut, or damage); opening at the other",
			"path", path, "transaction", rep.txid, "err", rep.badMeta)
	}
	bdb, info, bound, err := openBolt(path, opts.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	// A new file's directory entry must be durable before any checkpoint in
	// it is relied on.
	if err := syncDir(filepath.Dir(path)); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	db := &DB{
		bolt:     bdb,
		path:     path,
		opts:     opts,
		log:      log,
		budget:   opts.CacheBytes,
		ckpt:     make(chan struct{}, 1),
		pressure: make(chan struct{}, 1),
		tables:   make(map[string]*boltTable),
		drops:    make(map[string]bool),
	}
	db.lru.next, db.lru.prev = &db.lru, &db.lru
	db.last = info
	db.legacyBound, db.boundStored = bound.bound, bound.stored
	db.clock = newStateClock(opts.Now)
	if info.Seq > 0 {
		// Resume the state clock where the last checkpoint left it, whatever
		// the wall clock says now.
		db.clock.base = info.Time.UnixNano()
	}
	return db, nil
}

// fileBound is the legacy bound of a file and whether the file records it.
type fileBound struct {
	bound  int64
	stored bool
}

// openBolt opens the bbolt file and reads the last checkpoint's record,
// guarded against a damaged file.
func openBolt(path string, lockTimeout time.Duration) (bdb *bolt.DB, info CheckpointInfo, fb fileBound, err error) {
	defer func() { // runs after guard has turned a panic into err
		if err != nil && bdb != nil {
			_ = bdb.Close()
			bdb = nil
		}
	}()
	defer guard(&err)()
	bdb, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         lockTimeout,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: initialMmap,
	})
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrChecksum) {
		err = fmt.Errorf("bbolt: %w: %w", err, ErrCorrupt)
	}
	if err != nil {
		return nil, info, fb, err
	}
	err = bdb.View(func(tx *bolt.Tx) error {
		info, err = readInfo(tx)
		if err != nil {
			return err
		}
		var lv, tv []byte
		b := tx.Bucket(bucketCkpt)
		if b != nil {
			lv, tv = b.Get(keyLegacy), b.Get(keyTime)
		}
		fb.stored = lv != nil
		fb.bound, err = legacyBound(lv, tv, b != nil)
		return err
	})
	return bdb, info, fb, err
}

// legacyBound returns the legacy bound (value.go) of a file whose
// checkpoint record holds lv under keyLegacy and tv under keyTime (nil when
// absent); hasCkpt says whether the file has that record. A file that
// records no bound was written before checksums: its values were all
// written by its last checkpoint. A file without any checkpoint holds no
// value.
func legacyBound(lv, tv []byte, hasCkpt bool) (int64, error) {
	switch {
	case lv != nil && len(lv) != 8:
		return 0, corruptf("checkpoint record: legacy bound of %d bytes", len(lv))
	case lv != nil:
		return int64(binary.BigEndian.Uint64(lv)), nil
	case !hasCkpt:
		return 0, nil
	case len(tv) != 8:
		return 0, corruptf("checkpoint record is damaged")
	}
	return int64(binary.BigEndian.Uint64(tv)), nil
}

func readInfo(tx *bolt.Tx) (CheckpointInfo, error) {
	var info CheckpointInfo
	if b := tx.Bucket(bucketCkpt); b != nil {
		seq, ts := b.Get(keySeq), b.Get(keyTime)
		if len(seq) != 8 || len(ts) != 8 {
			return info, fmt.Errorf("checkpoint record is damaged: %w", ErrCorrupt)
		}
		info.Seq = binary.BigEndian.Uint64(seq)
		info.Time = time.Unix(0, int64(binary.BigEndian.Uint64(ts)))
	}
	info.Meta = make(map[string][]byte)
	if b := tx.Bucket(bucketMeta); b != nil {
		_ = b.ForEach(func(k, v []byte) error {
			info.Meta[string(k)] = append([]byte(nil), v...)
			return nil
		})
	}
	return info, nil
}

// LastCheckpoint returns the last committed checkpoint: after Open, the one
// found in the file; later, the last one this DB committed. Seq is 0 when
// there has been none. It does not block on a running checkpoint.
func (db *DB) LastCheckpoint() (CheckpointInfo, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return CheckpointInfo{}, ErrClosed
	}
	info := db.last
	info.Meta = make(map[string][]byte, len(db.last.Meta))
	for k, v := range db.last.Meta {
		info.Meta[k] = append([]byte(nil), v...)
	}
	return info, nil
}

// Pressure returns a channel that receives a value when the dirty entries
// pass half of the cache budget, so that the checkpoint manager can
// checkpoint before memory grows further. The channel has one slot and is
// never closed; signals coalesce.
func (db *DB) Pressure() <-chan struct{} { return db.pressure }

// Stats is a snapshot of a store's counters. For Memory, CacheBytes and
// Entries are all the state, DirtyEntries the changes since the last
// checkpoint, and Hits counts every Get.
type Stats struct {
	Budget       int64  // Options.CacheBytes
	CacheBytes   int64  // charge of all cached entries
	DirtyBytes   int64  // charge of the dirty entries (not evictable)
	Entries      int    // cached entries, including negative ones
	DirtyEntries int    // entries changed since the last checkpoint
	Hits         uint64 // Get served from the cache
	Misses       uint64 // Get that read the file
	Evictions    uint64 // clean entries dropped for the budget
	OverBudget   bool   // CacheBytes > Budget: dirty data exceeds the budget
	Refused      uint64 // Puts refused with ErrFull (Memory only)
}

// Stats returns the cache counters. It works after Close.
func (db *DB) Stats() Stats {
	db.mu.Lock()
	defer db.mu.Unlock()
	return Stats{
		Budget: db.budget, CacheBytes: db.used, DirtyBytes: db.dirtyB,
		Entries: db.nEntries, DirtyEntries: db.nDirty,
		Hits: db.hits, Misses: db.misses, Evictions: db.evicted,
		OverBudget: db.used > db.budget,
	}
}

// Check checks the file: first its structure, read through from the file
// as Open does (verify.go), then, if that holds, with bbolt's own
// consistency check in a read transaction. It waits for a running
// checkpoint and holds the cache lock meanwhile. It returns all the
// problems found, joined and wrapping ErrCorrupt, or nil.
func (db *DB) Check() error {
	db.ckpt <- struct{}{}
	defer func() { <-db.ckpt }()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	if _, err := verifyFile(db.path, nil); err != nil {
		return fmt.Errorf("state: check: %w", err)
	}
	var errs []error
	err := db.view(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: check: %w", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("state: check: %w: %w", errors.Join(errs...), ErrCorrupt)
	}
	return nil
}

// Damaged returns the first error wrapping ErrCorrupt that the DB met in
// the file since Open (a page bbolt could not read, a fault on the mapped
// file), or nil. Once damage is seen the DB refuses checkpoints (Prepare
// returns an error wrapping ErrCorrupt): state read from a damaged file
// must not be committed as if it were whole. It works after Close.
func (db *DB) Damaged() error {
	if e := db.damaged.Load(); e != nil {
		return *e
	}
	return nil
}

// Close waits for a running checkpoint to finish, then closes the file and
// drops the cache. Dirty entries not yet checkpointed are discarded: call
// Checkpoint first to keep them. When the DB met damage (Damaged), Close
// also leaves a note beside the file (its name plus ".suspect", written
// durably), so that the next Open reports the file as damaged even if its
// structure checks out. Close is idempotent; later calls return nil.
// Every other method returns ErrClosed after Close (Stats and Damaged
// still work).
func (db *DB) Close() error {
	db.ckpt <- struct{}{}
	defer func() { <-db.ckpt }()
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.tables = nil
	db.dirty = nil
	db.lru.next, db.lru.prev = &db.lru, &db.lru
	db.used, db.dirtyB, db.nEntries, db.nDirty = 0, 0, 0, 0
	db.mu.Unlock()
	err := db.bolt.Close()
	if err != nil {
		err = fmt.Errorf("state: close: %w", err)
	}
	if dmg := db.Damaged(); dmg != nil {
		if nerr := writeNote(db.path, dmg); nerr != nil {
			err = errors.Join(err, fmt.Errorf("state: close: %w", nerr))
		}
	}
	return err
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// nowNanos returns the state clock: the time of the last checkpoint found
// at Open (Options.Now for a new file), advanced by Options.Now's progress
// since Open; see stateClock.
func (db *DB) nowNanos() int64 { return db.clock.nanos() }

// stateClock is the state clock of a store, in Unix nanoseconds: base when
// start was read from now, advanced by now's progress since. time.Now's
// values carry monotonic readings, which Time.Sub uses, so a jump of the
// wall clock while the store is open does not move the state clock;
// neither does one across a restart, when base is the time of the last
// checkpoint.
type stateClock struct {
	now   func() time.Time
	start time.Time
	base  int64
}

// newStateClock starts a state clock at now(); a nil now is time.Now.
func newStateClock(now func() time.Time) stateClock {
	if now == nil {
		now = time.Now
	}
	c := stateClock{now: now, start: now()}
	c.base = c.start.UnixNano()
	return c
}

// nanos returns the state clock, clamped to be >= 0.
func (c stateClock) nanos() int64 {
	n := c.base + int64(c.now().Sub(c.start))
	if n < 0 {
		return 0
	}
	return n
}

func ttlNanos(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	if ttl > math.MaxInt64/2 {
		return math.MaxInt64 / 2
	}
	return int64(ttl)
}
