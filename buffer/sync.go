package buffer

import (
	"context"
	"fmt"
	"os"
	"time"
)

// Sync returns once every record with a sequence <= upto is durable
// (fsynced, file and directory). How it gets there depends on the mode:
//
//   - batch: it fsyncs now; concurrent callers share one fsync (group
//     commit): a caller arriving while an fsync runs waits for it and, if
//     its records were not covered, one of the waiters runs the next one;
//   - interval: it waits for the group commit of upkeep, which fsyncs
//     once the first record not yet fsynced has waited
//     Options.SyncInterval; sooner once 256 KiB are waiting, or while a
//     caller waits, once 32 KiB are, the Appends have paused or they come
//     further apart than the time left (see Options.SyncInterval);
//   - none: it returns at once.
//
// For the Memory kind, records still held in memory count as stored: Sync
// waits only for the part of upto that was written to segments.
//
// If the fsync of the segment holding upto failed, Sync returns a
// *SyncError (errors.Is ErrSyncFailed) now and on every later call for a
// record of that segment: the fsync is never retried on the same data, the
// segment is sealed and new records go to a new segment, whose Syncs
// succeed again. (Only an Append that waited for space in the middle of its
// batch can straddle a failed segment and the next one; pass its first
// sequence to Sync too if that matters.) Sync blocks until ctx is done
// (returning ctx.Err wrapped) or the log is closed (ErrClosed).
func (l *Log) Sync(ctx context.Context, upto uint64) error {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		if err := l.failedForLocked(upto); err != nil {
			l.mu.Unlock()
			return err
		}
		target := min(upto, l.diskNext-1)
		if l.opts.Sync == SyncNone || l.durable >= target {
			l.mu.Unlock()
			return nil
		}
		done := l.syncDone
		if l.opts.Sync == SyncBatch {
			l.mu.Unlock()
			// Either the round in progress covers upto and closes done, or
			// this caller takes the lock and runs the next round itself.
			// (Waiting on done alone is not enough: a round that closed
			// the previous done may still hold the lock, and done is then
			// closed only by a round nobody else may start.)
			select {
			case l.syncSem <- struct{}{}:
				// A failure is recorded on its segment; the loop reports it.
				l.syncRoundLocked(true)
				<-l.syncSem
				continue
			case <-done:
				continue
			case <-ctx.Done():
				return fmt.Errorf("buffer: sync: %w", ctx.Err())
			case <-l.closing:
				return ErrClosed
			}
		}
		// A waiter lets upkeep fsync as soon as the Appends pause.
		l.syncWaiters++
		if l.syncWaiters == 1 {
			l.nudge()
		}
		l.mu.Unlock()
		err := l.syncWait(ctx, done)
		l.mu.Lock()
		l.syncWaiters--
		l.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// syncWait waits for the fsync round that closes done.
func (l *Log) syncWait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("buffer: sync: %w", ctx.Err())
	case <-l.closing:
		return ErrClosed
	}
}

// failedForLocked returns the *SyncError of the segment holding seq, if
// its fsync failed. Only the segment holding seq is checked: a failure must
// not fail every later Sync, or one bad fsync would stall the pipeline.
func (l *Log) failedForLocked(seq uint64) error {
	i := l.segIndexLocked(seq)
	if i < 0 || l.segs[i].failed == nil || seq > l.segLastLocked(i) {
		return nil
	}
	s := l.segs[i]
	return &SyncError{Segment: s.num, First: s.first, Last: l.segLastLocked(i), Err: s.failed}
}

// syncRoundLocked runs one fsync round; the caller holds syncSem. It fsyncs
// sealed segments not yet fsynced (and closes them), the active segment if
// withActive and written since the last round, then the directory if a
// segment was created or removed. A failed fsync marks its segment failed
// for good. The round ends by waking Sync waiters.
func (l *Log) syncRoundLocked(withActive bool) error {
	l.mu.Lock()
	target := l.diskNext - 1
	pend := l.pending
	l.pending = nil
	for _, p := range pend {
		l.syncing = append(l.syncing, p.seg)
	}
	act, actSeg := l.active, l.segs[len(l.segs)-1]
	doAct := withActive && act != nil && l.activeDirty && actSeg.failed == nil
	if doAct {
		l.activeDirty = false
	}
	dirDirty := l.dirDirty
	l.dirDirty = false
	if doAct || !l.activeDirty {
		l.dirtySince, l.dirtyBytes = time.Time{}, 0
		l.roundN = 0
	}
	l.mu.Unlock()

	var firstErr error
	fail := func(s *segment, err error) {
		l.mu.Lock()
		if s.failed == nil {
			s.failed = err
			l.lastErr = err
			if len(l.segs) > 0 && l.segs[len(l.segs)-1] == s {
				l.activeBroken = true
			}
		}
		l.mu.Unlock()
		l.log.Error("buffer: fsync failed; segment sealed, its records are not durable", "segment", s.num, "err", err)
		if firstErr == nil {
			firstErr = fmt.Errorf("buffer: fsync segment %d: %w", s.num, err)
		}
	}
	for _, p := range pend {
		if p.seg.failed == nil {
			if err := l.fsync(p.f); err != nil {
				fail(p.seg, err)
			}
		}
		p.f.Close()
	}
	if doAct {
		if err := l.fsync(act); err != nil {
			fail(actSeg, err)
		}
	}
	if dirDirty {
		if err := syncDir(l.dir); err != nil {
			fail(actSeg, err)
		}
	}
	l.mu.Lock()
	l.fsyncs += uint64(len(pend))
	if doAct {
		l.fsyncs++
	}
	clear(l.syncing)
	l.syncing = l.syncing[:0]
	if withActive {
		l.durable = max(l.durable, target)
	}
	if doAct {
		l.roundEnd = time.Now()
	}
	close(l.syncDone)
	l.syncDone = make(chan struct{})
	l.mu.Unlock()
	return firstErr
}

// fsync fsyncs a segment file; tests replace it through l.fsyncHook to
// inject failures.
func (l *Log) fsync(f *os.File) error {
	if l.fsyncHook != nil {
		return l.fsyncHook(f)
	}
	return f.Sync()
}
