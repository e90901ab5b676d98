package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Record is one record returned by Reader.Read.
type Record struct {
	Seq     uint64
	Payload []byte // valid until the next Read, Seek or Close; copy to keep
}

// defaultReadRecords is the record limit of a Read given a buffer with no
// capacity.
const defaultReadRecords = 256

// Reader is a named, persisted cursor on a Log. Read, Ack and Seek are safe
// for concurrent use, but Read calls are serialised: a Reader is meant to
// serve one consumer.
type Reader struct {
	l    *Log
	name string

	// Guarded by l.mu.
	next  uint64 // sequence the next Read starts at
	acked uint64 // every record <= acked was processed
	saved uint64 // acked as last persisted
	gen   uint64 // bumped when the log moves next (drop, seek, truncate)
	stale bool   // files were cut: drop the buffered bytes
	// dropped counts records the overflow policy or MaxAge deleted before
	// this reader read them.
	dropped uint64

	// cf is the open cursor file, once written in this run; guarded by
	// l.curMu.
	cf *cursorFile

	// held is the number of the segment whose file f is (0: none), for
	// the log to free a deleted segment's blocks at once.
	held atomic.Uint64

	mu    sync.Mutex // serialises Read and Seek; guards the fields below
	f     *os.File
	fnum  uint64
	sc    scanner
	scSeq uint64 // sequence at sc.off while f is open
	mbuf  []byte // copy of memory frames returned by the last Read
	// scSeg and scGen are the segment being read and r.gen when the Read
	// began, for onSkip.
	scSeg  *segment
	scGen  uint64
	onSkip func(skip) // counts damage the scanner skipped; made once

	// Guarded by l.mu: where sequence memSeq sits in the Memory kind's
	// tail (a stream offset, see memTail.base), to avoid a walk per Read.
	memSeq uint64
	memPos int64
}

// Reader returns the reader called name, creating it if needed. The name
// is 1-64 characters of [A-Za-z0-9_.-], not starting with a dot; it names
// the cursor file. A new reader starts at the oldest retained record; an
// existing one (also from a previous run) resumes after its last persisted
// ack, so records read but not acked before a crash or Close are delivered
// again (at-least-once). Calls with the same name return the same *Reader.
// Once any reader exists, a segment is deleted as soon as every reader has
// acked past it. After Close it returns ErrClosed.
func (l *Log) Reader(name string) (*Reader, error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if r, ok := l.readers[name]; ok {
		return r, nil
	}
	first := l.firstLocked()
	r := l.newReader(name, first, first-1, ^uint64(0))
	l.readers[name] = r
	l.nudge() // its cursor file is written by upkeep
	return r, nil
}

func (l *Log) newReader(name string, next, acked, saved uint64) *Reader {
	r := &Reader{l: l, name: name, next: next, acked: acked, saved: saved}
	r.onSkip = func(sk skip) {
		l.mu.Lock()
		defer l.mu.Unlock()
		// Bytes cut or rewritten under a Read (TruncateAfter, a drop) are
		// not damage: the Read starts over.
		if l.hasSegmentLocked(r.scSeg) && r.gen == r.scGen && !r.stale {
			l.countSkipLocked(r.scSeg, r.sc.path, sk)
		}
	}
	return r
}

func validName(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] == '.' {
		return false
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// Name returns the reader's name.
func (r *Reader) Name() string { return r.name }

// Read returns the next records after the reader's position, appended to
// buf[:0]: at most cap(buf) records (256 if cap(buf) is 0) and at most
// maxBytes payload bytes (Options.MaxRecordBytes if maxBytes <= 0), but
// always at least one record. It blocks until at least one record is
// available, ctx is done (ctx.Err wrapped) or the log is closed (ErrClosed).
//
// Payloads alias the reader's buffer: they are valid until the next Read,
// Seek or Close. Read advances the position but not the ack: records not
// acked are delivered again after a restart. It never returns a record
// that fails its CRC: a damaged record is skipped, reading goes on at the
// next valid record of the segment (a segment whose end is damaged is read
// up to the damage), and the records skipped are counted once (Stats.Lost)
// and logged with file and offset. Sequences may skip ahead where records
// were lost or after a crash. Memory use is independent of the backlog:
// records are streamed from the files.
func (r *Reader) Read(ctx context.Context, buf []Record, maxBytes int) ([]Record, error) {
	l := r.l
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := cap(buf)
	if limit == 0 {
		limit = defaultReadRecords
	}
	if maxBytes <= 0 {
		maxBytes = l.opts.MaxRecordBytes
	}
	out := buf[:0]
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return out, ErrClosed
		}
		if first := l.firstLocked(); r.next < first {
			r.next = first
			r.gen++
		}
		if r.next >= l.next {
			if l.readWait == nil {
				l.readWait = make(chan struct{})
			}
			ch := l.readWait
			l.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-l.closing:
				return out, ErrClosed
			case <-ctx.Done():
				return out, fmt.Errorf("buffer: read: %w", ctx.Err())
			}
		}
		start, gen := r.next, r.gen
		if r.stale {
			r.stale = false
			r.memSeq = 0
			r.closeFile()
		}
		if l.opts.Kind == Memory && l.mem.live() > 0 && r.next >= l.mem.first {
			out = r.readMemoryLocked(out, limit, maxBytes)
			l.mu.Unlock()
			return out, nil
		}
		i := l.segIndexLocked(r.next)
		var (
			seg     *segment
			end     int64
			last    uint64
			after   uint64 // where records continue after this segment
			lossEnd uint64 // the records of this segment end before it
			gapLoss bool   // a jump to after loses records up to lossEnd
		)
		if i >= 0 {
			seg, end, last = l.segs[i], l.segs[i].size, l.segLastLocked(i)
		}
		switch {
		case i+1 < len(l.segs):
			after = l.segs[i+1].first
			lossEnd, gapLoss = l.segs[i+1].lossEnd()
		case l.opts.Kind == Memory:
			after, lossEnd, gapLoss = max(l.mem.first, l.diskNext), l.diskNext, true
		default:
			after, lossEnd, gapLoss = l.next, l.diskNext, true
		}
		if i < 0 || r.next > last {
			// Nothing of this segment left at r.next: move on.
			r.next = max(after, r.next)
			r.gen++
			l.mu.Unlock()
			continue
		}
		l.mu.Unlock()

		var err error
		r.scSeg, r.scGen = seg, gen
		out, err = r.readSegment(out, seg, start, end, last, limit, maxBytes)
		switch {
		case err == nil:
		case skippable(err):
			if len(out) > 0 {
				break // return what was read; the next Read meets the damage
			}
			l.mu.Lock()
			if !l.hasSegmentLocked(seg) || r.gen != gen || r.stale {
				l.mu.Unlock()
				r.closeFile()
				continue // deleted, cut or moved meanwhile
			}
			l.damagedLocked(seg, r.next, lossEnd, gapLoss, err)
			r.next = max(after, r.next)
			r.gen++
			l.mu.Unlock()
			r.closeFile()
			continue
		default:
			r.closeFile()
			return out[:0], err
		}
		l.mu.Lock()
		if r.gen != gen || r.next != start {
			l.mu.Unlock()
			out = out[:0]
			r.closeFile()
			continue
		}
		r.next = out[len(out)-1].Seq + 1
		l.mu.Unlock()
		return out, nil
	}
}

// skippable reports errors after which a reader moves to the next segment.
func skippable(err error) bool {
	var ce *CorruptError
	return errors.Is(err, io.EOF) || errors.As(err, &ce) || errors.Is(err, os.ErrNotExist)
}

// readSegment reads records starting at from (r.next as read under l.mu;
// r.next itself may move meanwhile) from seg, whose readable bytes end at
// end and whose records end at last at the latest.
func (r *Reader) readSegment(out []Record, seg *segment, from uint64, end int64, last uint64, limit, maxBytes int) ([]Record, error) {
	l := r.l
	if r.f == nil || r.fnum != seg.num || r.scSeq != from {
		r.closeFile()
		path := l.segPath(seg.num)
		f, err := os.Open(path)
		if err != nil {
			return out, fmt.Errorf("buffer: open segment: %w", err)
		}
		r.f, r.fnum = f, seg.num
		r.held.Store(seg.num)
		r.sc.reset(f, path, seg.data, end, seg.first, seg.salt, l.opts.MaxRecordBytes)
		r.sc.onSkip = r.onSkip
		for r.sc.next < from {
			seq, p, err := r.sc.scan(true)
			if err != nil {
				r.scSeq = r.sc.next
				return out, err
			}
			if seq >= from {
				// The scanner resynchronised over damage past from: keep
				// that record for the loop below.
				r.sc.off -= int64(frameOverhead + len(p))
				r.sc.next = seq
				break
			}
		}
		r.scSeq = r.sc.next
	}
	r.sc.end, r.sc.last = end, last
	bytes := 0
	for len(out) < limit {
		off, next := r.sc.off, r.sc.next
		seq, payload, err := r.sc.scan(len(out) == 0)
		if err == errNeedRefill || (err != nil && len(out) > 0) {
			r.sc.off, r.sc.next = off, next
			break
		}
		if err != nil {
			r.scSeq = r.sc.next
			return out, err
		}
		if len(out) > 0 && bytes+len(payload) > maxBytes {
			r.sc.off, r.sc.next = off, next
			break
		}
		bytes += len(payload)
		out = append(out, Record{Seq: seq, Payload: payload})
	}
	r.scSeq = r.sc.next
	return out, nil
}

// readMemoryLocked copies frames from the Memory kind's tail.
func (r *Reader) readMemoryLocked(out []Record, limit, maxBytes int) []Record {
	m := &r.l.mem
	var i int
	if p := r.memPos - m.base; r.memSeq == r.next && p >= int64(m.head) && p <= int64(len(m.buf)) {
		i = int(p)
	} else {
		i = m.offsetOf(r.next)
	}
	j, count, bytes := i, 0, 0
	for j < len(m.buf) && count < limit {
		fl := m.frameLen(j)
		if count > 0 && bytes+fl-frameOverhead > maxBytes {
			break
		}
		bytes += fl - frameOverhead
		j += fl
		count++
	}
	r.mbuf = append(r.mbuf[:0], m.buf[i:j]...)
	for k := 0; k < len(r.mbuf); {
		seq, payload, n, _, _ := parseFrame(r.mbuf[k:], r.l.opts.MaxRecordBytes, 0, r.l.salt)
		out = append(out, Record{Seq: seq, Payload: payload})
		k += n
	}
	r.next += uint64(count)
	r.memSeq, r.memPos = r.next, m.base+int64(j)
	return out
}

func (r *Reader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
		r.held.Store(0)
	}
}

// hasSegmentLocked reports whether s is still retained.
func (l *Log) hasSegmentLocked(s *segment) bool {
	i := l.segIndexLocked(s.first)
	for ; i >= 0 && i < len(l.segs) && l.segs[i].first == s.first; i-- {
		if l.segs[i] == s {
			return true
		}
	}
	return false
}

// damagedLocked reports records from..lossEnd-1 of s as unreadable: the
// segment ends early or its end is damaged with no valid record after it.
// Each record is counted once, whichever reader meets it first.
func (l *Log) damagedLocked(s *segment, from, lossEnd uint64, gapLoss bool, cause error) {
	var n uint64
	if gapLoss {
		n = s.countOnce(seqSpan{from, lossEnd})
	}
	if !errors.Is(cause, io.EOF) {
		l.lastErr = cause
	}
	if n == 0 {
		return
	}
	l.lost += n
	path, off := l.segPath(s.num), s.size
	var ce *CorruptError
	if errors.As(cause, &ce) {
		path, off = ce.Path, ce.Offset
	}
	l.log.Warn("buffer: records lost: the end of a segment is damaged or cut short",
		"path", path, "offset", off, "from_seq", from, "lost", n, "cause", cause)
}

// Ack marks every record with a sequence <= seq as processed. Acks only move
// forward (an older seq is ignored); acking past the read position moves it
// too. The position is persisted every Options.AckInterval (less often
// while it moves slowly) and on Close, in place (FORMAT.md); a crash may
// therefore re-deliver up to 1,000 records or those acked in the last
// AckInterval, whichever is more, which at-least-once delivery allows. Acking a
// sequence not yet appended returns a *RangeError. It does not block.
func (r *Reader) Ack(seq uint64) error {
	l := r.l
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if seq >= l.next {
		err := &RangeError{Op: "ack", Seq: seq, First: l.firstLocked(), Next: l.next}
		l.mu.Unlock()
		return err
	}
	if seq > r.acked {
		r.acked = seq
		if r.next <= seq {
			r.next = seq + 1
			r.gen++
		}
	}
	l.mu.Unlock()
	l.nudge()
	return nil
}

// Seek makes seq the next record Read returns and treats every record
// before it as acked (also when that moves the ack backwards) — for
// recovery from a checkpoint. seq must be in [first retained, next to
// append], else a *RangeError. It waits for a Read in progress.
func (r *Reader) Seek(seq uint64) error {
	l := r.l
	r.mu.Lock()
	defer r.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if first := l.firstLocked(); seq < first || seq > l.next {
		return &RangeError{Op: "seek", Seq: seq, First: first, Next: l.next}
	}
	r.next = seq
	r.acked = seq - 1
	r.gen++
	r.closeFile()
	l.nudge() // the cursor moved
	return nil
}
