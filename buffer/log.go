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
// record, except that after a crash (or damage) the log resumes past every
// sequence it may have issued: a sequence, and so a record ID, is never
// given to a second record (FORMAT.md, "Sequence reservation"). Damage
// costs only the damaged records: readers and recovery resynchronise at the
// next valid record, and every record lost is counted (Stats.Lost) and
// logged. Append copies and stores a batch (blocking only under the Block
// policy when full); Sync waits until a sequence is durable, and only then
// may the source be acked. Each sink reads through its own Reader and Acks
// what the destination accepted; delivery is at-least-once (records read
// but not acked, or acked less than Options.AckInterval before a crash, are
// delivered again). One Log per directory (a file lock). Every method is
// safe for concurrent use; after Close every method but Stats returns
// ErrClosed. Open starts one goroutine, which Close stops.
package buffer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/internal/flock"
)

// Log is an append-only log of records in a directory. Its methods are safe
// for concurrent use. Only one Log may have a directory open at a time.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *flock.File

	// syncSem (capacity 1) serialises fsync rounds and the operations
	// that replace the active file under them (TruncateAfter, Close). A
	// channel rather than a mutex, so that a batch-mode Sync can wait for
	// it and for the round in progress at once, and give up on ctx.
	syncSem chan struct{}
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
	// The adaptive group commit of interval mode (upkeep.go): when the
	// first record not yet fsynced was written, how many bytes are, the
	// Sync callers waiting, and the pace of Appends.
	dirtySince  time.Time
	dirtyBytes  int64
	syncWaiters int
	lastAppend  time.Time
	gapAvg      time.Duration    // moving average of the time between Appends
	lastGaps    [2]time.Duration // the last two times between Appends, as they were (0: not yet)
	roundStart  time.Time        // the first Append since the active segment's last fsync
	roundN      int              // Appends since then (their mean gap: quietLocked)
	roundEnd    time.Time        // when the last fsync round of the active segment ended
	fsyncs      uint64           // segment fsyncs done (Stats.Fsyncs)
	next        uint64           // sequence after the last record appended (Stats.NextSeq)
	resume      uint64           // after a crash: the next Append starts here (0: at next)
	reserved    uint64           // no sequence >= reserved may be issued yet (reserve.go)
	res         *reserveFile
	salt        uint32 // seeds the frame CRCs of the segments this Log creates
	diskNext    uint64 // sequence after the last record written to a file
	durable     uint64 // every record <= durable is fsynced (or failed)
	diskBytes   int64
	wbuf        []byte
	mem         memTail
	readers     map[string]*Reader
	drops       DropCounts
	lost        uint64
	lostGap     uint64 // the part of lost whose sequences lie in recorded gaps
	missing     int
	damaged     int
	lastErr     error
	cursorErr   error         // the last failure to persist the cursors; see persistCursors
	full        episode       // the current full episode (full.go)
	fullQuiet   time.Duration // fullQuiet, shorter in tests
	diskFree    int64         // bytes free on the file system, -1 unknown
	freeAt      time.Time     // when diskFree was read
	readWait    chan struct{} // closed on append; nil when nobody waits
	spaceWait   chan struct{} // closed when space is freed; nil when nobody waits
	syncDone    chan struct{} // closed after each fsync round
	closeErr    error         // written before closeDone is closed
	closeDone   chan struct{} // closed when the first Close has finished

	kick    chan struct{}
	closing chan struct{}
	wg      sync.WaitGroup

	// fsyncHook, when set (by tests, before any append), replaces the
	// fsync of segment files.
	fsyncHook func(*os.File) error
	// wakes counts upkeep's wake-ups (tests: an idle log has none).
	wakes atomic.Uint64
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
	if err := os.MkdirAll(dir, dirPerm); err != nil {
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
		syncSem:   make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		closeDone: make(chan struct{}),
		fullQuiet: fullQuiet,
		diskFree:  diskFree(dir),
		freeAt:    time.Now(),
	}
	if err := tightenDir(dir); err != nil {
		// The files stay readable by more accounts than they should; the
		// log itself works.
		l.log.Warn("buffer: cannot narrow the modes of the log's files to 0750/0640", "err", err)
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		lock.Release()
		return nil, err
	}
	l.wg.Add(1)
	go l.upkeep()
	return l, nil
}

// recovery collects what recover found, for its summary.
type recovery struct {
	skipped    uint64 // damaged records skipped inside the tail
	cutRecords uint64 // damaged records cut from the end of the tail
	cutBytes   int64
	cutPath    string
	cutOff     int64
	gone       string // the last segment was removed or quarantined: why
}

// recover loads the segment headers, scans and cuts the tail, works out
// where sequences resume (the reservation), opens the active segment, loads
// the cursors and makes a new reservation durable.
func (l *Log) recover() error {
	if err := l.removeTemps(); err != nil {
		return err
	}
	res, rstate, err := readReservation(l.dir)
	if err != nil {
		if isReadOnly(err) {
			return fmt.Errorf("%w: %w", ErrReadOnly, err)
		}
		return err
	}
	nums, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	var rep recovery
	var prevNum uint64
	for i, num := range nums {
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
			if i == len(nums)-1 {
				rep.gone = fmt.Sprintf("segment %d: %v", num, err)
			}
			if i == len(nums)-1 && size < headerSize {
				// Cut while it was created (it then held no durable
				// record) or emptied by damage: nothing in it to keep.
				// Its sequences are not reused.
				l.log.Warn("buffer: last segment has no complete header (cut while created, or damaged): removed",
					"path", path, "bytes", size)
				os.Remove(path)
				l.dirDirty = true
				continue
			}
			l.quarantine(path, err)
			continue
		}
		if h.Repaired {
			l.log.Warn("buffer: segment header damaged; its second copy is used", "path", path)
		}
		if prevNum != 0 && num != prevNum+1 {
			l.missing += int(num - prevNum - 1)
			l.log.Warn("buffer: segments missing, skipped", "after", prevNum, "before", num, "count", num-prevNum-1)
		}
		prevNum = num
		l.segs = append(l.segs, &segment{num: num, first: h.First, gap: h.Gap, created: h.Created, flags: h.Flags,
			version: h.Version, salt: h.Salt, data: h.dataOffset(), size: size})
	}
	if err := l.newSalt(); err != nil {
		return err
	}
	if len(l.segs) > 0 {
		if t := l.segs[len(l.segs)-1]; t.version == formatVersion {
			l.salt = t.salt // keep appending to it
		}
		if err := l.recoverTail(&rep); err != nil {
			return err
		}
	}
	cursors, _ := readCursors(l.dir, func(string, error) {})
	var maxAcked uint64
	minAcked := ^uint64(0)
	for _, c := range cursors {
		maxAcked, minAcked = max(maxAcked, c.High), min(minAcked, c.Acked)
	}
	nonEmpty := len(nums) > 0 || len(cursors) > 0 || l.damaged > 0 || hasDamagedFiles(l.dir)
	evidence := max(l.diskNext, maxAcked+1, 1)
	resume := evidence
	clean := false
	switch rstate {
	case reserveOK:
		resume = max(resume, res.Limit)
		clean = res.Clean
	case reserveDamaged:
		resume = max(resume, res.Limit+reserveOneSlot)
		l.log.Warn("buffer: sequence reservation: one slot damaged; resuming past what the other allows",
			"resume_seq", resume)
	case reserveLost:
		resume = evidence + reserveJump
		l.log.Warn("buffer: sequence reservation damaged; skipping far ahead so that no sequence is reused",
			"highest_seen", evidence-1, "resume_seq", resume)
	case reserveMissing:
		switch {
		case !nonEmpty:
		case l.allVersion1():
			l.log.Info("buffer: log written by an older version; sequence reservation starts now", "resume_seq", resume)
		default:
			resume = evidence + reserveJump
			l.log.Warn("buffer: sequence reservation missing; skipping far ahead so that no sequence is reused",
				"highest_seen", evidence-1, "resume_seq", resume)
		}
	}
	l.accountTail(&rep, clean, res, minAcked)
	if len(l.segs) == 0 {
		if err := l.createFirst(resume); err != nil {
			return err
		}
	}
	for _, s := range l.segs {
		l.diskBytes += s.size
	}
	l.durable = l.diskNext - 1
	l.next = l.diskNext
	if resume > l.next {
		l.resume = resume
	}
	l.mem.reset(l.next)
	if err := l.loadCursors(); err != nil {
		return err
	}
	if err := l.reserveAtOpen(rstate, res, max(resume, l.next)); err != nil {
		return err
	}
	if nonEmpty && !clean && !(rstate == reserveMissing && l.allVersion1()) {
		l.logCrashRecovery(&rep, max(resume, l.next))
	}
	return nil
}

// newSalt draws the salt of the segments this Log creates.
func (l *Log) newSalt() error {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("buffer: salt: %w", err)
	}
	l.salt = binary.LittleEndian.Uint32(b[:])
	return nil
}

// allVersion1 reports whether every segment is in the format of version
// 1, which had no sequence reservation.
func (l *Log) allVersion1() bool {
	for _, s := range l.segs {
		if s.version != 1 {
			return false
		}
	}
	return len(l.segs) > 0
}

func hasDamagedFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.damaged"))
	return len(m) > 0
}

// accountTail counts the records found missing at the end of the log. After
// a clean close the reservation says exactly where the log ended, so every
// record between the last one found and that end is lost (segments cut,
// emptied or deleted since). After a crash only damaged records whose bytes
// remain are counted: a record torn by the crash was never durable (it was
// not acknowledged, its source sends it again) and a segment that is gone
// leaves no count.
func (l *Log) accountTail(rep *recovery, clean bool, res reservation, minAcked uint64) {
	if !clean {
		if rep.cutRecords > 0 {
			l.lost += rep.cutRecords
			l.lostGap += rep.cutRecords
			l.log.Warn("buffer: records lost: damaged records cut from the end of the last segment",
				"path", rep.cutPath, "offset", rep.cutOff, "bytes", rep.cutBytes, "lost", rep.cutRecords)
		}
		if rep.gone != "" {
			l.log.Warn("buffer: the last segment was unreadable: the records it held, if any were durable, are lost; their number is unknown",
				"cause", rep.gone)
		}
		return
	}
	from := max(l.diskNext, res.Run)
	if len(l.segs) == 0 {
		// Every segment is gone: what was held starts at the oldest
		// reader's position at the latest (no reader: unknown).
		if minAcked == ^uint64(0) {
			return
		}
		from = max(res.Run, minAcked+1)
	}
	if res.Limit <= from {
		return
	}
	n := res.Limit - from
	l.lost += n
	l.lostGap += n
	rep.cutRecords = n
	l.log.Warn("buffer: records lost since the last clean close: the newest segments were cut, emptied or deleted",
		"from_seq", from, "lost", n, "path", rep.cutPath, "offset", rep.cutOff, "bytes_cut", rep.cutBytes, "cause", rep.gone)
}

// recoverTail scans the last segment, resynchronising over damage (each
// damaged stretch counted and logged), cuts it after its last valid record
// and opens it for appending.
func (l *Log) recoverTail(rep *recovery) error {
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
	sc.reset(f, path, tail.data, tail.size, tail.first, tail.salt, l.opts.MaxRecordBytes)
	sc.onSkip = func(sk skip) {
		rep.skipped += l.countSkipLocked(tail, path, sk)
	}
	var bad error
	for {
		if _, _, err := sc.scan(true); err != nil {
			if !errors.Is(err, io.EOF) {
				bad = err
			}
			break
		}
	}
	if bad != nil {
		if _, ok := bad.(*CorruptError); !ok {
			f.Close()
			return fmt.Errorf("buffer: scan tail segment: %w", bad)
		}
		n, err := sc.countCut()
		if err != nil {
			f.Close()
			return fmt.Errorf("buffer: scan tail segment: %w", err)
		}
		rep.cutRecords, rep.cutBytes, rep.cutPath, rep.cutOff = n, tail.size-sc.off, path, sc.off
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
	l.diskNext = sc.next
	// A tail with damage inside is sealed at the next write, so that the
	// next Open does not count it again.
	l.activeBroken = rep.skipped > 0
	return nil
}

// createFirst creates the first segment of a log that has none, starting
// at first.
func (l *Log) createFirst(first uint64) error {
	var num uint64 = 1
	if nums, _ := listSegments(l.dir); len(nums) > 0 {
		num = nums[len(nums)-1] + 1
	}
	s, f, err := l.createSegment(num, first, first)
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

// reserveAtOpen makes a new reservation durable before any sequence is
// issued: one block from resume on, not clean (a crash from now on must
// resume past it). cur is the current slot read at Open.
func (l *Log) reserveAtOpen(rstate reserveState, cur reservation, resume uint64) error {
	limit := resume + reserveBlock
	var err error
	if rstate == reserveMissing || rstate == reserveLost {
		if l.res, err = createReservation(l.dir, reservation{Limit: limit}); err == nil {
			err = syncDir(l.dir)
		}
	} else if l.res, err = openReservation(l.dir, cur); err == nil {
		err = l.res.write(limit, false, 0)
	}
	if err != nil {
		if isReadOnly(err) {
			return fmt.Errorf("%w: %w", ErrReadOnly, err)
		}
		return err
	}
	l.reserved = limit
	return nil
}

// reserveLocked extends the reservation so that the sequences below need
// may be issued: one fsync per reserveBlock sequences.
func (l *Log) reserveLocked(need uint64) error {
	limit := max(l.reserved, need) + reserveBlock
	if err := l.res.write(limit, false, 0); err != nil {
		return err
	}
	l.reserved = limit
	return nil
}

// release writes the clean reservation on Close: the log ends at next, so
// a clean restart stays contiguous and can tell what went missing since.
func (l *Log) releaseLocked() error {
	limit := max(l.next, l.resume)
	var run uint64
	if l.resume > l.next {
		run = l.resume
	} else {
		for i := len(l.segs) - 1; i >= 0; i-- {
			if s := l.segs[i]; s.gap < s.first {
				run = s.first
				break
			}
		}
	}
	return l.res.write(limit, true, run)
}

// logCrashRecovery logs the one INFO line of a recovery after a crash:
// what was cut, where sequences resume and where each reader resumes. A
// log that holds nothing and lost nothing says it at DEBUG.
func (l *Log) logCrashRecovery(rep *recovery, resume uint64) {
	names := make([]string, 0, len(l.readers))
	for n := range l.readers {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		r := l.readers[n]
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s resumes at %d (up to %d records may be sent again)", n, r.next, l.heldLocked(r.acked+1, l.next))
	}
	if len(names) == 0 {
		b.WriteString("none")
	}
	cutAt := ""
	if rep.cutPath != "" {
		cutAt = fmt.Sprintf("%s offset %d", rep.cutPath, rep.cutOff)
	}
	level := slog.LevelInfo
	if rep.cutBytes == 0 && rep.cutRecords+rep.skipped == 0 && l.heldLocked(l.firstLocked(), l.next) == 0 {
		level = slog.LevelDebug // nothing held, nothing cut (an empty dead-letter log)
	}
	l.log.Log(context.Background(), level, "buffer: recovered after a crash",
		"last_seq", l.diskNext-1, "resume_seq", resume,
		"cut_bytes", rep.cutBytes, "cut_at", cutAt, "lost", rep.cutRecords+rep.skipped,
		"readers", b.String())
}

// countSkipLocked counts (once) and logs the records of a damaged stretch of
// segment s that a scanner resynchronised over. It returns how many were
// newly counted. The caller holds l.mu, or is recover.
func (l *Log) countSkipLocked(s *segment, path string, sk skip) uint64 {
	n := s.countOnce(seqSpan{sk.From, sk.Next})
	if n == 0 {
		return 0
	}
	l.lost += n
	l.lastErr = &CorruptError{Path: path, Offset: sk.Off, Seq: sk.From, Reason: sk.Reason}
	l.log.Warn("buffer: records lost: damaged records skipped", "path", path, "offset", sk.Off,
		"bytes", sk.To-sk.Off, "from_seq", sk.From, "lost", n, "reason", sk.Reason)
	return n
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
		if s.hasData() {
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
	return l.segs[i+1].gap - 1
}

// heldLocked counts the sequences in from..to-1 that the log holds: those
// inside a segment's range or the Memory kind's tail, not in a recorded gap.
func (l *Log) heldLocked(from, to uint64) uint64 {
	var n uint64
	add := func(lo, hi uint64) {
		lo, hi = max(lo, from), min(hi, to)
		if lo < hi {
			n += hi - lo
		}
	}
	for i, s := range l.segs {
		if s.hasData() {
			add(s.first, l.segLastLocked(i)+1)
		}
	}
	if l.mem.live() > 0 {
		add(l.mem.first, l.next)
	}
	return n
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
	l.syncSem <- struct{}{}
	l.mu.Lock()
	if err := l.spillLocked(true); err != nil {
		errs = append(errs, err)
	}
	l.mu.Unlock()
	if err := l.syncRoundLocked(true); err != nil {
		errs = append(errs, err)
	}
	<-l.syncSem
	for _, r := range readers {
		r.mu.Lock()
		r.closeFile()
		r.mu.Unlock()
	}
	if err := l.saveCursors(true); err != nil {
		errs = append(errs, err)
	}
	l.closeCursors()
	if len(errs) == 0 {
		// Everything is durable: release the unused reservation.
		l.mu.Lock()
		err := l.releaseLocked()
		l.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
	}
	l.closeFiles()
	l.lock.Release()
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("buffer: close: %w", errors.Join(errs...))
	}
	l.closeErr = err
	close(l.closeDone)
	return err
}

func (l *Log) closeFiles() {
	l.res.close()
	for _, p := range l.pending {
		p.f.Close()
	}
	l.pending = nil
	if l.active != nil {
		l.active.Close()
		l.active = nil
	}
}
