package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/internal/atomicfile"
)

// idleTick is how often upkeep wakes when no fsync is pending: for MaxAge
// and cursor persistence. Writes and acks wake it at once, so an idle
// gateway does not pay 100 wake-ups a second per log.
const idleTick = time.Second

// upkeep runs until Close: the periodic fsync (interval mode), deletion of
// segments every reader has passed, the age limit, and cursor persistence.
func (l *Log) upkeep() {
	defer l.wg.Done()
	t := time.NewTimer(l.opts.SyncInterval)
	defer t.Stop()
	idle := false
	lastCursors := time.Now()
	cursorsFailing := false
	for {
		select {
		case <-l.closing:
			return
		case <-l.kick:
			l.refreshFree()
			l.reclaim()
			if idle {
				idle = false
				t.Reset(l.opts.SyncInterval)
			}
			continue
		case <-t.C:
		}
		roundStart := time.Now()
		if l.opts.Sync != SyncNone {
			l.syncMu.Lock()
			l.syncRoundLocked(l.opts.Sync == SyncInterval)
			l.syncMu.Unlock()
		}
		l.refreshFree()
		l.reclaim()
		if time.Since(lastCursors) >= l.opts.AckInterval {
			lastCursors = time.Now()
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
		idle = !l.fsyncPending()
		if idle {
			t.Reset(min(idleTick, l.opts.AckInterval))
		} else {
			t.Reset(max(0, l.opts.SyncInterval-time.Since(roundStart)))
		}
	}
}

// fsyncPending reports work for the next upkeep fsync round.
func (l *Log) fsyncPending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.opts.Sync {
	case SyncInterval:
		return l.activeDirty || len(l.pending) > 0 || l.dirDirty
	case SyncBatch:
		return len(l.pending) > 0 || l.dirDirty
	}
	return false
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

// Cursor file: magic "PCUR", version u16, reserved u16, acked u64,
// CRC-32C of the preceding 16 bytes u32, reserved u32.
const (
	cursorSize    = 24
	cursorVersion = 1
)

var cursorMagic = [4]byte{'P', 'C', 'U', 'R'}

func encodeCursor(acked uint64) []byte {
	b := make([]byte, cursorSize)
	copy(b, cursorMagic[:])
	binary.LittleEndian.PutUint16(b[4:6], cursorVersion)
	binary.LittleEndian.PutUint64(b[8:16], acked)
	binary.LittleEndian.PutUint32(b[16:20], crc32.Checksum(b[:16], castagnoli))
	return b
}

func decodeCursor(b []byte) (uint64, error) {
	if len(b) != cursorSize || [4]byte(b[0:4]) != cursorMagic {
		return 0, errors.New("bad cursor file")
	}
	if v := binary.LittleEndian.Uint16(b[4:6]); v != cursorVersion {
		return 0, fmt.Errorf("unsupported cursor version %d", v)
	}
	if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:20]) {
		return 0, errors.New("cursor crc mismatch")
	}
	return binary.LittleEndian.Uint64(b[8:16]), nil
}

// readCursors returns the cursor files of dir; damaged ones are reported
// through bad.
func readCursors(dir string, bad func(name string, err error)) (map[string]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("buffer: list %s: %w", dir, err)
	}
	out := make(map[string]uint64)
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), cursorSuffix)
		if !ok || !validName(name) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			var acked uint64
			if acked, err = decodeCursor(b); err == nil {
				out[name] = acked
				continue
			}
		}
		bad(name, err)
	}
	return out, nil
}

// loadCursors creates a Reader for every cursor file, clamped to the
// retained records.
func (l *Log) loadCursors() error {
	first := l.firstLocked()
	cs, err := readCursors(l.dir, func(name string, err error) {
		l.log.Warn("buffer: cursor file damaged; reader restarts at the oldest record", "reader", name, "err", err)
		l.readers[name] = l.newReader(name, first, first-1, ^uint64(0))
	})
	if err != nil {
		return err
	}
	for name, acked := range cs {
		saved := acked
		if acked >= l.next {
			l.log.Warn("buffer: cursor points past the data; clamped", "reader", name, "acked", acked, "last", l.next-1)
			acked = l.next - 1
			saved = ^uint64(0)
		}
		if acked+1 < first {
			acked = first - 1
		}
		l.readers[name] = l.newReader(name, acked+1, acked, saved)
	}
	return nil
}

// saveCursors is persistCursors on a disk that may be full. Under
// DropOldest a log fills the disk to the last block, and a cursor file is
// written to a new file before it replaces the old one: then the oldest
// segment is dropped (as the policy would for a record) and the write
// tried once more.
func (l *Log) saveCursors(all bool) error {
	err := l.persistCursors(all)
	if err == nil || !isNoSpace(err) || l.opts.Overflow != DropOldest {
		return err
	}
	l.mu.Lock()
	n, ok := l.dropOldestLocked(DropOverflowOldest)
	if ok {
		l.full.dropped += n
		l.full.segments++
		l.fullLocked(err, "dropped", n)
	}
	l.mu.Unlock()
	if !ok {
		return err
	}
	return l.persistCursors(all)
}

// persistCursors writes the cursors whose ack moved since they were last
// written: tmp file, fsync, rename, fsync the directory.
func (l *Log) persistCursors(all bool) error {
	l.curMu.Lock()
	defer l.curMu.Unlock()
	type job struct {
		r     *Reader
		acked uint64
	}
	var jobs []job
	l.mu.Lock()
	for _, r := range l.readers {
		if r.acked != r.saved || all && r.saved == ^uint64(0) {
			jobs = append(jobs, job{r, r.acked})
		}
	}
	l.mu.Unlock()
	if len(jobs) == 0 {
		return nil
	}
	var errs []error
	defer func() {
		// A failure stays the log's last error until a later write of
		// the cursors succeeds, and no longer.
		l.mu.Lock()
		if len(errs) == 0 && l.cursorErr != nil && l.lastErr == l.cursorErr {
			l.lastErr = nil
		}
		l.mu.Unlock()
	}()
	for _, j := range jobs {
		if err := writeFileSync(filepath.Join(l.dir, j.r.name+cursorSuffix), encodeCursor(j.acked)); err != nil {
			errs = append(errs, err)
			continue
		}
		l.mu.Lock()
		j.r.saved = j.acked
		l.mu.Unlock()
	}
	if err := syncDir(l.dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		err := fmt.Errorf("buffer: persist cursors: %w", errors.Join(errs...))
		l.mu.Lock()
		l.lastErr, l.cursorErr = err, err
		l.mu.Unlock()
		return err
	}
	return nil
}

// writeFileSync replaces path with b so that a power cut leaves the old or
// the new content (atomicfile.Write; the caller fsyncs the directory).
func writeFileSync(path string, b []byte) error {
	if err := atomicfile.Write(path, b, filePerm); err != nil {
		return fmt.Errorf("buffer: write %s: %w", filepath.Base(path), err)
	}
	return nil
}
