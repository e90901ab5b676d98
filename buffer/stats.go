package buffer

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// DropCounts counts dropped records by reason.
type DropCounts struct {
	OverflowOldest uint64 // DropOverflowOldest
	OverflowNewest uint64 // DropOverflowNewest
	Age            uint64 // DropAge
	DiskFull       uint64 // DropDiskFull
}

func (d *DropCounts) add(r DropReason, n uint64) {
	switch r {
	case DropOverflowOldest:
		d.OverflowOldest += n
	case DropOverflowNewest:
		d.OverflowNewest += n
	case DropAge:
		d.Age += n
	case DropDiskFull:
		d.DiskFull += n
	}
}

// Total is the sum over all reasons.
func (d DropCounts) Total() uint64 { return d.OverflowOldest + d.OverflowNewest + d.Age + d.DiskFull }

// CursorStats describes one reader.
type CursorStats struct {
	Name  string
	Acked uint64 // every record <= Acked was acked
	Next  uint64 // next sequence Read returns
	Lag   uint64 // records held and not yet acked
	// Dropped counts the records the overflow policy or MaxAge deleted
	// before this reader read them, since Open.
	Dropped uint64
}

// Stats is a snapshot of a Log.
type Stats struct {
	Kind            Kind
	Segments        int
	Records         uint64    // retained records: sequence range minus gaps and known loss
	DiskBytes       int64     // bytes of the segment files
	MemoryBytes     int64     // bytes of records held in memory (Memory kind)
	FirstSeq        uint64    // oldest retained record (== NextSeq when empty)
	NextSeq         uint64    // sequence after the last record appended: the next Append gets it (after a crash, a higher one)
	DurableSeq      uint64    // every record <= DurableSeq is fsynced
	Fsyncs          uint64    // segment files fsynced since Open (each costs the flash at least a page)
	OldestRecord    time.Time // no record is older (the oldest segment's creation)
	Drops           DropCounts
	Lost            uint64 // records found missing (damage, missing segments)
	MissingSegments int    // segment files missing at Open
	DamagedSegments int    // segment files with a bad header at Open (renamed *.damaged)
	Cursors         []CursorStats
	// LastError is the last I/O or damage error, nil if none. A full disk's
	// error stays here while the log is full and is cleared when the
	// episode ends.
	LastError error
	// Full is the current full episode (max_bytes reached or the disk
	// full); its Since is zero when the log is not full.
	Full FullStats
	// DiskFree is what the file system holding the log still has for it
	// (statfs, read again every second while it is under 256 MiB or four
	// segments or the log is full, else every 10 s), -1 if unknown.
	DiskFree int64
}

// Stats returns a snapshot. It does not block on I/O and works after Close.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.firstLocked()
	s := Stats{
		Kind:            l.opts.Kind,
		Segments:        len(l.segs),
		DiskBytes:       l.diskBytes,
		MemoryBytes:     l.mem.live(),
		FirstSeq:        first,
		NextSeq:         l.next,
		DurableSeq:      l.durable,
		Fsyncs:          l.fsyncs,
		Drops:           l.drops,
		Lost:            l.lost,
		MissingSegments: l.missing,
		DamagedSegments: l.damaged,
		LastError:       l.lastErr,
		Full:            l.fullStatsLocked(),
		DiskFree:        l.diskFree,
	}
	// Records held, less the damage readers found inside them (the loss
	// counted at recovery lies in recorded gaps, outside what is held).
	if n, lost := l.heldLocked(first, l.next), l.lost-l.lostGap; n > lost {
		s.Records = n - lost
	}
	if len(l.segs) > 0 {
		s.OldestRecord = time.Unix(0, l.segs[0].created)
	}
	for _, r := range l.readers {
		s.Cursors = append(s.Cursors, CursorStats{Name: r.name, Acked: r.acked, Next: r.next, Lag: l.heldLocked(r.acked+1, l.next), Dropped: r.dropped})
	}
	sort.Slice(s.Cursors, func(i, j int) bool { return s.Cursors[i].Name < s.Cursors[j].Name })
	return s
}

// TruncateAfter removes every record with a sequence > seq, so that the
// next Append gets seq+1 — to cut an outbox back to a checkpoint. Cursors
// past seq are moved back to it. The cut is durable (fsynced) when it
// returns. It waits for an fsync round in progress. If seq is below the
// oldest retained record, every record is removed.
func (l *Log) TruncateAfter(seq uint64) error {
	l.syncSem <- struct{}{}
	defer func() { <-l.syncSem }()
	if err := l.syncRoundLocked(l.opts.Sync != SyncNone); err != nil {
		l.log.Warn("buffer: fsync before truncate", "err", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if seq+1 >= l.next {
		return nil
	}
	oldNext := l.next
	l.next = seq + 1
	l.resume = 0 // the explicit reuse TruncateAfter is for
	for _, r := range l.readers {
		r.stale = true
		if r.next > l.next {
			r.next = l.next
			r.gen++
		}
		if r.acked > seq {
			r.acked = seq
		}
	}
	if l.opts.Kind == Memory && l.mem.live() > 0 && seq+1 >= l.mem.first {
		l.mem.cut(seq, oldNext)
		return nil
	}
	l.mem.reset(l.next)
	if seq+1 >= l.diskNext {
		return nil
	}
	// Delete the segments after the one holding seq (all if seq is before
	// the first one), then cut that one.
	k := l.segIndexLocked(seq)
	if k < 0 {
		return l.restartLocked(seq + 1)
	}
	l.active.Close()
	l.active = nil
	for len(l.segs) > k+1 {
		s := l.segs[len(l.segs)-1]
		os.Remove(l.segPath(s.num))
		l.diskBytes -= s.size
		l.segs = l.segs[:len(l.segs)-1]
	}
	s := l.segs[k]
	path := l.segPath(s.num)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		l.activeBroken = true
		return l.restartLocked(seq + 1)
	}
	var sc scanner
	sc.reset(f, path, s.data, s.size, s.first, s.salt, l.opts.MaxRecordBytes)
	for sc.next <= seq {
		if _, _, err := sc.scan(true); err != nil {
			break
		}
	}
	if err := f.Truncate(sc.off); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("buffer: truncate segment %d: %w", s.num, err)
	}
	l.diskBytes -= s.size - sc.off
	s.size = sc.off
	s.failed = nil
	l.active = f
	l.activeBroken = false
	l.activeDirty = false
	l.diskNext = sc.next
	l.next = sc.next
	l.durable = min(l.durable, l.next-1)
	return syncDir(l.dir)
}

// restartLocked removes every segment and starts an empty one at next.
func (l *Log) restartLocked(next uint64) error {
	last := l.segs[len(l.segs)-1].num
	s, f, err := l.createSegment(last+1, next, next)
	if err == nil {
		if err = f.Sync(); err != nil {
			f.Close()
			os.Remove(l.segPath(last + 1))
		}
	}
	if err != nil {
		l.activeBroken = true
		return fmt.Errorf("buffer: truncate: %w", err)
	}
	if l.active != nil {
		l.active.Close()
	}
	for _, s := range l.segs {
		os.Remove(l.segPath(s.num))
	}
	l.segs = []*segment{s}
	l.active = f
	l.diskBytes = s.size
	l.diskNext, l.next = next, next
	l.mem.reset(next)
	l.durable = min(l.durable, next-1)
	return syncDir(l.dir)
}

// RemoveReader deletes the reader called name and its cursor file, so that
// it no longer holds back segment deletion (for a sink removed from the
// configuration). A *Reader for that name returned earlier must not be
// used any more. Removing an unknown name is not an error.
func (l *Log) RemoveReader(name string) error {
	if !validName(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	l.curMu.Lock()
	defer l.curMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if r := l.readers[name]; r != nil {
		r.cf.close()
		r.cf = nil
	}
	delete(l.readers, name)
	l.mu.Unlock()
	err := os.Remove(filepath.Join(l.dir, name+cursorSuffix))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("buffer: remove reader %q: %w", name, err)
	}
	if err == nil {
		if err := syncDir(l.dir); err != nil {
			return err
		}
	}
	l.nudge()
	return nil
}
