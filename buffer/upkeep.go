package buffer

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/pspf/pspf-edge/internal/atomicfile"
)

// slowTick is how often upkeep wakes for the features that watch the
// clock rather than the log's own events: MaxAge while the log holds
// records, and a full episode until it is over. Without them an idle log
// arms no timer at all.
const slowTick = time.Second

// syncFillBytes is the unsynced bytes at which interval mode fsyncs without
// waiting any longer: the flash then gets whole pages whatever the interval.
const syncFillBytes = 256 << 10

// syncWaitBytes is the unsynced bytes at which interval mode fsyncs as soon
// as a Sync caller waits: at such a rate the page an fsync rewrites is a
// small part of what it writes, and the next round overlaps the writers'
// next batches instead of waiting for them to run out of acks.
const syncWaitBytes = 32 << 10

// quietGaps is how many usual gaps between Appends make a pause (see
// quietLocked). Records from independent publishers arrive at random: one
// gap in 55 is over four times the mean, one in 3,000 over eight. Four
// fsynced a 100 msg/s random stream about 3.6 times per second instead of
// once per SyncInterval (each fsync rewrites a page of flash); eight, 1.1
// times. A writer that waits for its acks appends nothing at all, so it
// costs it little: its gaps are those of a burst, and minQuiet bounds it.
const quietGaps = 8

// cursorBatch and cursorWaitFactor set how often a reader's cursor is
// written while it moves: AckInterval after the last write once it moved
// cursorBatch records, at the latest cursorWaitFactor × AckInterval after
// it. Each write costs a page of flash (4 KiB): at 100 msg/s a write per
// second is 41 bytes per record, about a third of what the records
// themselves take; every ten seconds, 4. A crash then makes a reader send
// again at most cursorBatch records or those of one AckInterval, whichever
// is more (at-least-once delivery allows it).
const (
	cursorBatch      = 1000
	cursorWaitFactor = 10
)

// minRoundAppends is how many Appends since the last fsync make their mean
// gap a measure of the pace (see quietLocked).
const minRoundAppends = 8

// minQuiet is the shortest pause in the Appends that counts as "the
// writers are waiting for their fsync" (see quietLocked).
const minQuiet = 200 * time.Microsecond

// upkeep runs until Close: the group commit (interval mode), the fsync of
// sealed segments and of the directory, deletion of segments every reader
// has passed, the age limit and cursor persistence. It sleeps until the
// earliest of these is due (nextWakeLocked); Appends, acks and Sync
// callers wake it when they make one due, so an idle log has no timer
// armed at all.
func (l *Log) upkeep() {
	defer l.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	lastCursors := time.Now()
	cursorsFailing := false
	for {
		l.mu.Lock()
		wait, armed := l.nextWakeLocked(time.Now(), lastCursors, cursorsFailing)
		l.mu.Unlock()
		if armed {
			t.Reset(wait)
		} else {
			t.Stop()
		}
		select {
		case <-l.closing:
			return
		case <-l.kick:
		case <-t.C:
		}
		l.wakes.Add(1)
		now := time.Now()
		l.mu.Lock()
		due := l.syncDueLocked(now)
		l.mu.Unlock()
		if due {
			l.syncSem <- struct{}{}
			l.syncRoundLocked(l.opts.Sync == SyncInterval)
			<-l.syncSem
		}
		l.refreshFree()
		l.reclaim()
		if at, ok := l.cursorsDueAt(lastCursors, cursorsFailing); ok && !now.Before(at) {
			lastCursors = now
			// One line when persisting begins to fail (a full disk
			// retries every AckInterval) and one when it works again.
			err := l.saveCursors(false)
			if err != nil && !cursorsFailing {
				l.log.Error("buffer: persist cursors; retrying, readers may resend more after a crash", "err", err)
			} else if err == nil && cursorsFailing {
				l.log.Info("buffer: cursors persisted again")
			}
			cursorsFailing = err != nil
		}
	}
}

// paceLocked records an Append at now for the pause detection of interval
// mode: a moving average of the gaps between Appends. A gap during which an
// fsync round ended counts from the end of that round: writers that
// waited for it could append nothing before it, so that wait is the log's
// pace, not the stream's. (Counting it, even clamped to four times the
// average as before, made writers with few Appends per ack window learn
// ever longer pauses and get their fsyncs ever later; and starting from
// zero, a 100 msg/s stream got its first ten records fsynced one by one
// while the clamped average grew.) A gap counts as at most
// SyncInterval/quietGaps, a pause that already makes the threshold
// SyncInterval: the first record after an idle hour moves the average a
// quarter of the way there, not to an hour.
func (l *Log) paceLocked(now time.Time) {
	if !l.lastAppend.IsZero() {
		from := l.lastAppend
		if l.roundEnd.After(from) {
			from = l.roundEnd
		}
		gap := min(now.Sub(from), l.opts.SyncInterval/quietGaps)
		l.gapAvg += (gap - l.gapAvg) / 4
		l.lastGaps[1], l.lastGaps[0] = l.lastGaps[0], now.Sub(l.lastAppend)
	}
	l.lastAppend = now
	if l.roundN == 0 {
		l.roundStart = now
	}
	l.roundN++
}

// quietLocked is how long the Appends must pause, while a Sync caller
// waits, before interval mode fsyncs without waiting for its deadline:
// quietGaps times the usual gap between Appends (the moving average, or
// the mean gap of the Appends since the last fsync once there are
// minRoundAppends of them, whichever is longer: a few short gaps in a row
// do not make a random stream's next long one a pause). Writers that wait
// for their acks append nothing more (an MQTT broker sends a client only
// so many QoS 1 messages before their PUBACKs), so waiting longer would
// cost throughput, not save an fsync. Bounded by minQuiet and
// SyncInterval.
func (l *Log) quietLocked() time.Duration {
	gap := l.gapAvg
	if l.roundN >= minRoundAppends {
		gap = max(gap, l.lastAppend.Sub(l.roundStart)/time.Duration(l.roundN-1))
	}
	return min(max(quietGaps*gap, minQuiet), l.opts.SyncInterval)
}

// dirtyLocked reports whether the files hold writes that upkeep's next
// round would fsync: sealed segments and the directory in every mode, the
// active segment in interval mode.
func (l *Log) dirtyLocked() bool {
	switch l.opts.Sync {
	case SyncInterval:
		return l.activeDirty || len(l.pending) > 0 || l.dirDirty
	case SyncBatch:
		return len(l.pending) > 0 || l.dirDirty
	}
	return false
}

// syncDueAtLocked returns when upkeep's next fsync round is due (ok false:
// none is). In interval mode that is SyncInterval after the first write it
// covers, at once when syncFillBytes are waiting, or while a Sync caller
// waits, once the Appends have paused for quietLocked, or at once when the
// last two gaps between Appends were each longer than the time left and
// than SyncInterval/quietGaps. In batch mode only sealed segments and the
// directory are left to upkeep, SyncInterval after they became due.
func (l *Log) syncDueAtLocked(now time.Time) (at time.Time, ok bool) {
	if !l.dirtyLocked() {
		return time.Time{}, false
	}
	if l.dirtySince.IsZero() {
		l.dirtySince = now // the directory, dirtied by a removal or at recovery
	}
	at = l.dirtySince.Add(l.opts.SyncInterval)
	if l.opts.Sync == SyncInterval {
		if l.dirtyBytes >= syncFillBytes {
			return now, true
		}
		if l.syncWaiters > 0 && l.dirtyBytes >= syncWaitBytes {
			return now, true
		}
		if l.syncWaiters > 0 && l.activeDirty {
			if q := l.lastAppend.Add(l.quietLocked()); q.Before(at) {
				at = q
			}
			// Appends slower than the time left: the next one is not
			// expected before the deadline, so waiting for it would cover
			// nothing more (a source that hands over a batch a second).
			// Only for gaps the pause detection cannot tell apart
			// (SyncInterval/quietGaps and more, see paceLocked): faster
			// writers keep the group commit they had.
			if g := min(l.lastGaps[0], l.lastGaps[1]); g >= l.opts.SyncInterval/quietGaps && !l.lastAppend.Add(g).Before(at) {
				return now, true
			}
		}
	}
	return at, true
}

// syncDueLocked reports whether an fsync round is due at now.
func (l *Log) syncDueLocked(now time.Time) bool {
	at, ok := l.syncDueAtLocked(now)
	return ok && !at.After(now)
}

// nextWakeLocked returns how long upkeep may sleep (armed false: until
// something wakes it): until the next fsync round, the next cursor write
// if a cursor moved (or the last write failed), and at most slowTick while
// MaxAge has records to watch or a full episode is open.
func (l *Log) nextWakeLocked(now, lastCursors time.Time, cursorsFailing bool) (wait time.Duration, armed bool) {
	var at time.Time
	earliest := func(t time.Time) {
		if !armed || t.Before(at) {
			at, armed = t, true
		}
	}
	if t, ok := l.syncDueAtLocked(now); ok {
		earliest(t)
	}
	if t, ok := l.cursorsDueAtLocked(lastCursors, cursorsFailing); ok {
		earliest(t)
	}
	if l.opts.MaxAge > 0 && (len(l.segs) > 1 || len(l.segs) == 1 && l.segs[0].hasData()) || !l.full.since.IsZero() {
		earliest(now.Add(slowTick))
	}
	return max(0, at.Sub(now)), armed
}

// cursorsDueAt returns when the cursors are due to be written (ok false:
// none moved since its last write, which did not fail): AckInterval after
// the last write once a reader's ack moved cursorBatch records (or back,
// or it was never written), cursorWaitFactor × AckInterval after it for a
// smaller move, AckInterval after a failed write.
func (l *Log) cursorsDueAt(last time.Time, failing bool) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cursorsDueAtLocked(last, failing)
}

func (l *Log) cursorsDueAtLocked(last time.Time, failing bool) (at time.Time, ok bool) {
	if failing {
		return last.Add(l.opts.AckInterval), true
	}
	for _, r := range l.readers {
		switch {
		case r.acked == r.saved:
		case r.saved == ^uint64(0) || r.acked < r.saved || r.acked-r.saved >= cursorBatch:
			return last.Add(l.opts.AckInterval), true
		default:
			at, ok = last.Add(cursorWaitFactor*l.opts.AckInterval), true
		}
	}
	return at, ok
}

// reclaim deletes segments every reader has acked, applies MaxAge, frees
// acked in-memory records and ends a full episode that is over.
func (l *Log) reclaim() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if len(l.readers) > 0 {
		minAcked := ^uint64(0)
		for _, r := range l.readers {
			minAcked = min(minAcked, r.acked)
		}
		for len(l.segs) > 1 && l.segLastLocked(0) <= minAcked {
			l.removeOldestLocked()
		}
		if l.opts.Kind == Memory {
			l.releaseAckedLocked(minAcked)
		}
	}
	if l.opts.MaxAge > 0 {
		now := l.opts.Now()
		cutoff := now.Add(-l.opts.MaxAge).UnixNano()
		for len(l.segs) > 1 && l.segs[1].created <= cutoff {
			l.dropOldestLocked(DropAge)
		}
		act := l.segs[len(l.segs)-1]
		if act.hasData() && act.created <= now.Add(-l.opts.MaxAge/2).UnixNano() {
			if err := l.rotateLocked(l.diskNext); err != nil {
				l.log.Warn("buffer: seal aged segment", "err", err)
			}
		}
	}
	l.checkFullLocked()
}

// writeFileSync replaces path with b so that a power cut leaves the old or
// the new content (atomicfile.Write; the caller fsyncs the directory).
func writeFileSync(path string, b []byte) error {
	if err := atomicfile.Write(path, b, filePerm); err != nil {
		return fmt.Errorf("buffer: write %s: %w", filepath.Base(path), err)
	}
	return nil
}
