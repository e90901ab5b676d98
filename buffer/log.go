// Package buffer is the durable segment log of pspf-edge: the pipeline log
// and the sink outboxes. It stores opaque payloads under consecutive
// sequence numbers in append-only segment files (see FORMAT.md), makes them
// durable with group-committed fsyncs, keeps a named, persisted cursor per
// reader, caps its bytes and age with an overflow policy, and recovers from
// crashes and damaged files without stalling.
//
// Memory use does not depend on the backlog: readers stream from the files
// through a fixed buffer.
//
// The contract in short: sequence numbers start at 1 and increase by one per
// record. Append copies and stores a batch (blocking only under the Block
// policy when full); Sync waits until a sequence is durable, and only then
// may the source be acked. Each sink reads through its own Reader and Acks
// what the destination accepted; delivery is at-least-once (records read
// but not acked, or acked less than Options.AckInterval before a crash, are
// delivered again). One Log per directory (a file lock). Every method is
// safe for concurrent use; after Close every method but Stats returns
// ErrClosed. Open starts one goroutine, which Close stops.
package buffer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Log is an append-only log of records in a directory. Its methods are safe
// for concurrent use. Only one Log may have a directory open at a time.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File

	// syncMu serialises fsync rounds and the operations that replace the
	// active file under them (TruncateAfter, Close).
	syncMu sync.Mutex
	// curMu serialises cursor file writes.
	curMu sync.Mutex

	mu           sync.Mutex
	closed       bool
	segs         []*segment // retained segments, oldest first; the last is active
	active       *os.File   // file of the last segment
	activeBroken bool       // a write or fsync failed: seal it at the next write
	activeDirty  bool       // written since the last fsync
	pending      []pendingFile
	syncing      []*segment // sealed segments an fsync round holds open now
	dirDirty     bool
	next         uint64 // sequence of the next record appended
	diskNext     uint64 // sequence after the last record written to a file
	durable      uint64 // every record <= durable is fsynced (or failed)
	diskBytes    int64
	wbuf         []byte
	mem          memTail
	readers      map[string]*Reader
	drops        DropCounts
	lost         uint64
	missing      int
	damaged      int
	lastErr      error
	full         episode       // the current full episode (full.go)
	fullQuiet    time.Duration // fullQuiet, shorter in tests
	diskFree     int64         // bytes free on the file system, -1 unknown
	freeAt       time.Time     // when diskFree was read
	readWait     chan struct{} // closed on append; nil when nobody waits
	spaceWait    chan struct{} // closed when space is freed; nil when nobody waits
	syncDone     chan struct{} // closed after each fsync round
	closeErr     error         // written before closeDone is closed
	closeDone    chan struct{} // closed when the first Close has finished

	kick    chan struct{}
	closing chan struct{}
	wg      sync.WaitGroup

	// fsyncHook, when set (by tests, before any append), replaces the
	// fsync of segment files.
	fsyncHook func(*os.File) error
}

type pendingFile struct {
	f   *os.File
	seg *segment
}

// Open opens (creating if needed) the log in dir, recovers it (see the
// package doc and FORMAT.md: the tail segment is scanned and cut at the
// first bad record, sealed segments are checked lazily by readers), and
// takes the directory lock. It starts one upkeep goroutine that Close
// stops. A directory that cannot be written returns an error wrapping
// ErrReadOnly; a directory held by another Log returns ErrLocked.
func Open(dir string, opts Options) (*Log, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		if isReadOnly(err) {
			return nil, fmt.Errorf("%w: create %s: %w", ErrReadOnly, dir, err)
		}
		return nil, fmt.Errorf("buffer: create dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir:       dir,
		opts:      o,
		log:       o.Logger.With("buffer", dir),
		lock:      lock,
		readers:   make(map[string]*Reader),
		syncDone:  make(chan struct{}),
		kick:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		closeDone: make(chan struct{}),
		fullQuiet: fullQuiet,
		diskFree:  diskFree(dir),
		freeAt:    time.Now(),
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		unlockDir(lock)
		return nil, err
	}
	l.wg.Add(1)
	go l.upkeep()
	return l, nil
}

// recover loads the segment headers, scans and cuts the tail, opens the
// active segment and loads the cursors.
func (l *Log) recover() error {
	if err := l.removeTemps(); err != nil {
		return err
	}
	nums, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	var prevNum uint64
	for _, num := range nums {
		path := l.segPath(num)
		h, size, err := readHeader(path)
		if err == nil && h.Num != num {
			err = &CorruptError{Path: path, Reason: fmt.Sprintf("header says segment %d", h.Num)}
		}
		if err == nil && len(l.segs) > 0 && h.First < l.segs[len(l.segs)-1].first {
			err = &CorruptError{Path: path, Reason: fmt.Sprintf("first sequence %d goes backwards", h.First)}
		}
		if err != nil {
			if isReadOnly(err) {
				return fmt.Errorf("%w: %w", ErrReadOnly, err)
			}
			if num == nums[len(nums)-1] && size < headerSize {
				// Torn creation of the newest segment: it held no record
				// that was ever reported durable.
				l.log.Warn("buffer: removing partly created last segment", "path", path, "bytes", size)
				os.Remove(path)
				l.dirDirty = true
				continue
			}
			l.quarantine(path, err)
			continue
		}
		if prevNum != 0 && num != prevNum+1 {
			l.missing += int(num - prevNum - 1)
			l.log.Warn("buffer: segments missing, skipped", "after", prevNum, "before", num, "count", num-prevNum-1)
		}
		prevNum = num
		l.segs = append(l.segs, &segment{num: num, first: h.First, created: h.Created, flags: h.Flags, size: size})
	}
	if err := l.recoverTail(); err != nil {
		return err
	}
	for _, s := range l.segs {
		l.diskBytes += s.size
	}
	l.durable = l.diskNext - 1
	l.next = l.diskNext
	l.mem.reset(l.next)
	return l.loadCursors()
}

// recoverTail scans the last segment, cuts it at the first bad record and
// opens it for appending; with no segment it creates the first one.
func (l *Log) recoverTail() error {
	for len(l.segs) > 0 {
		tail := l.segs[len(l.segs)-1]
		path := l.segPath(tail.num)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			if isReadOnly(err) {
				return fmt.Errorf("%w: open %s: %w", ErrReadOnly, path, err)
			}
			return fmt.Errorf("buffer: open tail segment: %w", err)
		}
		var sc scanner
		sc.reset(f, path, headerSize, tail.size, tail.first, l.opts.MaxRecordBytes)
		next := tail.first
		var bad error
		for {
			seq, _, err := sc.scan(true)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					bad = err
				}
				break
			}
			next = seq + 1
		}
		if bad != nil {
			if _, ok := bad.(*CorruptError); !ok {
				f.Close()
				return fmt.Errorf("buffer: scan tail segment: %w", bad)
			}
			l.log.Warn("buffer: tail segment cut at first bad record", "segment", tail.num,
				"offset", sc.off, "bytes_cut", tail.size-sc.off, "reason", bad)
			if err := f.Truncate(sc.off); err != nil {
				f.Close()
				return fmt.Errorf("buffer: cut tail segment: %w", err)
			}
			tail.size = sc.off
		}
		// The records may be only in the page cache after a process crash.
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("buffer: fsync tail segment: %w", err)
		}
		l.active = f
		l.diskNext = next
		return nil
	}
	first := uint64(1)
	if c := l.maxCursorFile(); c+1 > first {
		first = c + 1
	}
	var num uint64 = 1
	if nums, _ := listSegments(l.dir); len(nums) > 0 {
		num = nums[len(nums)-1] + 1
	}
	s, f, err := l.createSegment(num, first, 0)
	if err != nil {
		if isReadOnly(err) {
			return fmt.Errorf("%w: %w", ErrReadOnly, err)
		}
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("buffer: fsync new segment: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	l.segs = append(l.segs, s)
	l.active = f
	l.diskNext = first
	return nil
}

// quarantine renames a segment with a damaged header out of the way so it
// is neither read nor counted, and reports it.
func (l *Log) quarantine(path string, cause error) {
	l.damaged++
	l.lastErr = cause
	dst := path + ".damaged"
	if err := os.Rename(path, dst); err != nil {
		l.log.Error("buffer: damaged segment skipped; rename failed", "path", path, "err", err, "cause", cause)
		return
	}
	l.log.Warn("buffer: damaged segment skipped", "path", dst, "cause", cause)
	l.dirDirty = true
}

func (l *Log) removeTemps() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("buffer: list %s: %w", l.dir, err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			os.Remove(filepath.Join(l.dir, e.Name()))
		}
	}
	return nil
}

// firstLocked is the sequence of the oldest retained record.
func (l *Log) firstLocked() uint64 {
	for _, s := range l.segs {
		if s.size > headerSize {
			return s.first
		}
	}
	if l.mem.live() > 0 {
		return l.mem.first
	}
	return l.next
}

// segIndexLocked returns the index of the segment that would hold seq, or -1.
func (l *Log) segIndexLocked(seq uint64) int {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > seq })
	return i - 1
}

// segLastLocked is the last sequence segment i may hold.
func (l *Log) segLastLocked(i int) uint64 {
	if i == len(l.segs)-1 {
		return l.diskNext - 1
	}
	return l.segs[i+1].first - 1
}

// wakeReadersLocked wakes Read calls waiting for records.
func (l *Log) wakeReadersLocked() {
	if l.readWait != nil {
		close(l.readWait)
		l.readWait = nil
	}
}

// wakeWritersLocked wakes Append calls waiting for space.
func (l *Log) wakeWritersLocked() {
	if l.spaceWait != nil {
		close(l.spaceWait)
		l.spaceWait = nil
	}
}

func (l *Log) nudge() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Close stops the upkeep goroutine, wakes blocked calls (they return
// ErrClosed), writes the Memory kind's records to segments, fsyncs what
// was written (except segments whose fsync already failed), persists every
// cursor and releases the directory lock. It is idempotent: later calls
// (also concurrent ones) wait for the first to finish and return its
// result. After Close every method but Stats returns ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.closeDone
		return l.closeErr
	}
	l.closed = true
	close(l.closing)
	l.wakeReadersLocked()
	l.wakeWritersLocked()
	readers := make([]*Reader, 0, len(l.readers))
	for _, r := range l.readers {
		readers = append(readers, r)
	}
	l.mu.Unlock()
	l.wg.Wait()

	var errs []error
	l.syncMu.Lock()
	l.mu.Lock()
	if err := l.spillLocked(true); err != nil {
		errs = append(errs, err)
	}
	l.mu.Unlock()
	if err := l.syncRoundLocked(true); err != nil {
		errs = append(errs, err)
	}
	l.syncMu.Unlock()
	for _, r := range readers {
		r.mu.Lock()
		r.closeFile()
		r.mu.Unlock()
	}
	if err := l.saveCursors(true); err != nil {
		errs = append(errs, err)
	}
	l.closeFiles()
	unlockDir(l.lock)
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("buffer: close: %w", errors.Join(errs...))
	}
	l.closeErr = err
	close(l.closeDone)
	return err
}

func (l *Log) closeFiles() {
	for _, p := range l.pending {
		p.f.Close()
	}
	l.pending = nil
	if l.active != nil {
		l.active.Close()
		l.active = nil
	}
}
