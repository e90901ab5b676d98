package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"time"
)

// wbufLimit bounds the bytes encoded per write, so Append's buffer does not
// grow with the batch size.
const wbufLimit = 1 << 20

// diskFullRetry is how often a blocked Append retries after ENOSPC when no
// reader frees space meanwhile.
const diskFullRetry = 100 * time.Millisecond

// Append stores a batch of payloads under consecutive sequence numbers and
// returns the sequence of the last one. Payloads are copied: the caller may
// reuse them when Append returns. An empty batch returns 0, nil. Records
// are visible to readers at once; call Sync to wait until they are durable
// (a power cut can lose records that are not; their sequence numbers are
// never given to other records: after a crash the first Append resumes
// past every sequence issued before, see FORMAT.md).
//
// A payload above Options.MaxRecordBytes fails the whole batch with a
// *RecordTooLargeError before anything is stored.
//
// When the log is at Options.MaxBytes (or the disk is full) the policy
// applies:
//   - Block: Append waits until readers' acks free space (or, for a full
//     disk, until writes succeed again; it retries every 100 ms). With no
//     reader, space is freed only by MaxAge. If ctx ends first, it returns
//     an *AppendError whose Err wraps ctx.Err().
//   - DropOldest: whole oldest segments are deleted, one at a time until
//     the batch fits, and Append continues. Their records no reader had
//     read are counted as DropOverflowOldest (a record a reader has read
//     is its sink's to deliver); lagging cursors are moved past them. A
//     deleted segment's blocks are freed at once, also when a reader holds
//     it open, so that on a full disk one deletion makes room. With
//     nothing left to delete the records are refused, as below.
//   - DropNewest: the records that do not fit are refused and counted
//     (DropOverflowNewest, or DropDiskFull for ENOSPC); Append returns an
//     *AppendError (errors.Is ErrFull) saying how many were stored.
//
// Each full episode is logged once when it begins (WARN) and once when it
// ends (INFO), and shows in Stats.Full meanwhile; see FullStats.
//
// On any error, payloads[:Accepted] of the *AppendError were stored and last
// is the sequence of the last of them (0 if none). After Close it returns
// ErrClosed (in an *AppendError).
func (l *Log) Append(ctx context.Context, payloads [][]byte) (last uint64, err error) {
	for i, p := range payloads {
		if len(p) > l.opts.MaxRecordBytes {
			return 0, &RecordTooLargeError{Index: i, Size: len(p), Max: l.opts.MaxRecordBytes}
		}
	}
	accepted := 0
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opts.Sync == SyncInterval {
		l.paceLocked(time.Now())
	}
	for accepted < len(payloads) {
		if l.closed {
			return last, &AppendError{Accepted: accepted, Err: ErrClosed}
		}
		// Reserve a header: the batch may need a new segment.
		free := l.opts.MaxBytes - l.diskBytes - l.mem.live() - headerSize
		j, size := accepted, 0
		for j < len(payloads) {
			fl := frameOverhead + len(payloads[j])
			if int64(size+fl) > free || (size > 0 && size+fl > wbufLimit) {
				break
			}
			size += fl
			j++
		}
		if j == accepted {
			if err := l.overflowLocked(ctx, nil); err != nil {
				return last, l.refuseLocked(accepted, len(payloads), err)
			}
			continue
		}
		n, err := l.storeLocked(payloads[accepted:j], size)
		if n > 0 {
			accepted += n
			last = l.next - 1
			l.wakeReadersLocked()
		}
		if err != nil {
			if !isNoSpace(err) {
				l.lastErr = err
				return last, &AppendError{Accepted: accepted, Err: err}
			}
			if err := l.overflowLocked(ctx, err); err != nil {
				return last, l.refuseLocked(accepted, len(payloads), err)
			}
		}
	}
	return last, nil
}

// overflowErr carries the reason a full log refuses records.
type overflowErr struct {
	reason DropReason
	cause  error
}

func (e *overflowErr) Error() string { return string(e.reason) }

// overflowLocked applies the policy when the log is full (cause nil) or a
// write hit ENOSPC. It returns nil when Append should try again, or the
// error that ends it. It may release l.mu while it waits. Every call is
// an overflow of the current full episode (full.go).
func (l *Log) overflowLocked(ctx context.Context, cause error) error {
	reason := DropOverflowNewest
	if cause != nil {
		reason = DropDiskFull
	}
	switch l.opts.Overflow {
	case DropOldest:
		if n, ok := l.dropOldestLocked(DropOverflowOldest); ok {
			l.full.dropped += n
			l.full.segments++
			l.fullLocked(cause, "dropped", n)
			return nil
		}
		return &overflowErr{reason, cause}
	case DropNewest:
		return &overflowErr{reason, cause}
	}
	l.fullLocked(cause, "", 0)
	if l.spaceWait == nil {
		l.spaceWait = make(chan struct{})
	}
	ch := l.spaceWait
	var retry <-chan time.Time
	if cause != nil {
		t := time.NewTimer(diskFullRetry)
		defer t.Stop()
		retry = t.C
	}
	l.waitLocked()
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.unwaitLocked()
	}()
	select {
	case <-ch:
		return nil
	case <-retry:
		return nil
	case <-l.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("waiting for space: %w", ctx.Err())
	}
}

// refuseLocked turns the error that ended Append into an *AppendError,
// counting dropped records.
func (l *Log) refuseLocked(accepted, total int, err error) error {
	oe, ok := err.(*overflowErr)
	if !ok {
		return &AppendError{Accepted: accepted, Err: err}
	}
	dropped := total - accepted
	l.drops.add(oe.reason, uint64(dropped))
	l.full.refused += uint64(dropped)
	l.fullLocked(oe.cause, "refused", uint64(dropped))
	return &AppendError{Accepted: accepted, Dropped: dropped, Reason: oe.reason, Err: oe.cause}
}

// storeLocked stores payloads (size framed bytes, known to fit under the
// cap). It returns how many were stored.
func (l *Log) storeLocked(payloads [][]byte, size int) (int, error) {
	start := max(l.next, l.resume)
	if end := start + uint64(len(payloads)); end > l.reserved {
		// The reservation is durable before any sequence of the new
		// block is stored or visible.
		if err := l.reserveLocked(end); err != nil {
			return 0, err
		}
	}
	if start > l.next {
		// The first records after a crash resume past every sequence the
		// log may have issued before it (the Memory kind's tail is empty).
		if l.mem.live() == 0 {
			l.mem.reset(start)
		}
		l.next = start
	}
	l.resume = 0
	if l.opts.Kind == Memory {
		if l.mem.live()+int64(size) > l.opts.MemoryBytes {
			keep := max(0, min(l.opts.MemoryBytes/2, l.opts.MemoryBytes-int64(size)))
			if err := l.spillTo(keep); err != nil {
				return 0, err
			}
		}
		for _, p := range payloads {
			l.mem.buf = appendFrame(l.mem.buf, l.next, p, l.salt)
			l.next++
		}
		return len(payloads), nil
	}
	l.wbuf = slices.Grow(l.wbuf[:0], size)[:size]
	off := 0
	for i, p := range payloads {
		end := off + frameOverhead + len(p)
		putFrame(l.wbuf[off:end], l.next+uint64(i), p, l.salt)
		off = end
	}
	n, err := l.writeFramesLocked(l.wbuf, l.next, len(payloads))
	l.next += uint64(n)
	if cap(l.wbuf) > 2*wbufLimit {
		l.wbuf = nil
	}
	return n, err
}

// writeFramesLocked writes total encoded frames, the first with sequence
// first, to the active segment, rotating when it is full, broken or when
// first does not follow the last record written. It returns how many
// frames were written; on error the active file is cut back to its last
// good frame.
func (l *Log) writeFramesLocked(frames []byte, first uint64, total int) (int, error) {
	written := 0
	off := 0
	seq := first
	for off < len(frames) {
		act := l.segs[len(l.segs)-1]
		if l.activeBroken || act.failed != nil || seq != l.diskNext || act.salt != l.salt || act.version != formatVersion {
			if err := l.rotateLocked(seq); err != nil {
				return written, err
			}
			continue
		}
		room := l.opts.SegmentBytes - act.size
		end, count := off, 0
		if int64(len(frames)-off) <= room {
			end, count = len(frames), total-written // the common case: no walk
		}
		for end < len(frames) {
			fl := int64(frameOverhead + binary.LittleEndian.Uint32(frames[end:end+4]))
			if int64(end-off)+fl > room {
				break
			}
			end += int(fl)
			count++
		}
		if count == 0 {
			if err := l.rotateLocked(seq); err != nil {
				return written, err
			}
			continue
		}
		if _, err := l.active.WriteAt(frames[off:end], act.size); err != nil {
			if terr := l.active.Truncate(act.size); terr != nil {
				l.activeBroken = true
			}
			return written, fmt.Errorf("write segment %d: %w", act.num, err)
		}
		act.size += int64(end - off)
		l.diskBytes += int64(end - off)
		l.dirtyBytes += int64(end - off)
		if !l.activeDirty || l.dirtyBytes >= syncFillBytes && l.dirtyBytes-int64(end-off) < syncFillBytes {
			if !l.activeDirty && l.dirtySince.IsZero() {
				l.dirtySince = time.Now()
			}
			l.activeDirty = true
			l.nudge() // arm upkeep's deadline for the fsync, or run it now: a full one is due
		}
		off = end
		seq += uint64(count)
		l.diskNext = seq
		written += count
	}
	return written, nil
}

// rotateLocked seals the active segment and starts a new one whose first
// record will have sequence first. An active segment without records is
// removed instead of sealed. When first does not follow the last record
// written (records released from memory unwritten, or the resume point
// after a crash), the new header records the gap, so that it is not
// counted as loss.
func (l *Log) rotateLocked(first uint64) error {
	old := l.segs[len(l.segs)-1]
	gap := min(first, l.diskNext)
	if !old.hasData() {
		gap = min(gap, old.gap) // old is removed: its gap carries over
	}
	s, f, err := l.createSegment(old.num+1, first, gap)
	if err != nil {
		return err
	}
	oldFile := l.active
	l.active = f
	l.activeBroken = false
	l.activeDirty = true
	l.dirDirty = true
	l.nudge()
	l.diskBytes += s.size
	l.diskNext = first
	if !old.hasData() {
		oldFile.Close()
		os.Remove(l.segPath(old.num))
		l.diskBytes -= old.size
		l.segs[len(l.segs)-1] = s
		return nil
	}
	l.segs = append(l.segs, s)
	if old.failed != nil || l.opts.Sync == SyncNone {
		oldFile.Close()
	} else {
		l.pending = append(l.pending, pendingFile{f: oldFile, seg: old})
	}
	return nil
}

// dropOldestLocked deletes the oldest sealed segment and moves cursors
// past it. It reports false if there is no sealed segment to drop, else
// how many records it counted as dropped under reason: those no reader had
// read. A record a reader has read is its sink's to deliver (the sink
// holds it until the destination accepts it), so it is not counted; with
// no reader, every record of the segment is. Each reader also counts the
// records it lost (CursorStats.Dropped).
func (l *Log) dropOldestLocked(reason DropReason) (uint64, bool) {
	if len(l.segs) < 2 {
		return 0, false
	}
	s := l.segs[0]
	end := s.first // the segment holds s.first..end-1
	if s.hasData() {
		end = l.segLastLocked(0) + 1
	}
	from := s.first
	for _, r := range l.readers {
		from = max(from, r.next)
		if r.next < end {
			r.dropped += end - max(r.next, s.first)
		}
	}
	var n uint64
	if end > from {
		n = end - from
	}
	l.removeOldestLocked()
	l.drops.add(reason, n)
	l.log.Debug("buffer: dropped oldest segment", "segment", s.num, "records", end-s.first, "unread", n, "reason", reason)
	first := l.firstLocked()
	for _, r := range l.readers {
		if r.next < first {
			r.next = first
			r.gen++
		}
		if r.acked+1 < first {
			r.acked = first - 1
		}
	}
	l.nudge() // cursors moved, the directory changed
	return n, true
}

// removeOldestLocked deletes the oldest segment's file and frees its
// blocks at once, whoever holds it open: a sealed file still waiting for
// its fsync round is closed (its records are gone: nothing to fsync), and
// a file an fsync round or a reader holds open is cut to zero after the
// unlink (the reader then finds it deleted and moves on). Otherwise the
// space would return only when the last descriptor closes, and on a full
// disk drop_oldest would drop segment after segment for nothing.
func (l *Log) removeOldestLocked() {
	s := l.segs[0]
	path := l.segPath(s.num)
	l.pending = slices.DeleteFunc(l.pending, func(p pendingFile) bool {
		if p.seg == s {
			p.f.Close()
			return true
		}
		return false
	})
	var held *os.File
	if slices.Contains(l.syncing, s) || l.readerHoldsLocked(s.num) {
		held, _ = os.OpenFile(path, os.O_WRONLY, 0)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		l.log.Warn("buffer: remove segment", "segment", s.num, "err", err)
	}
	if held != nil {
		if err := held.Truncate(0); err != nil {
			l.log.Warn("buffer: free removed segment", "segment", s.num, "err", err)
		}
		held.Close()
	}
	l.segs[0] = nil
	l.segs = l.segs[1:]
	l.diskBytes -= s.size
	l.dirDirty = true
	l.wakeWritersLocked()
}

// readerHoldsLocked reports whether a reader has segment num open.
func (l *Log) readerHoldsLocked(num uint64) bool {
	for _, r := range l.readers {
		if r.held.Load() == num {
			return true
		}
	}
	return false
}
