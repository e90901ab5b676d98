package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
)

// Cursor file (FORMAT.md, "Cursor file"). Version 2 holds two 32-byte
// slots in different file-system blocks, written alternately in place and
// fdatasynced: a cursor write then costs the page of its slot, not a new
// file, a rename and a directory fsync (three journal updates) as version
// 1's replace-by-rename did. A torn write damages only the slot written;
// the other one holds the position before it. Version 1 (one 24-byte
// record) is still read; the first write replaces it with version 2.
//
// Slot: magic "PCUR", version u16 = 2, reserved u16, generation u64, acked
// u64, CRC-32C of the preceding 24 bytes u32, reserved u32. Version 1:
// magic, version u16 = 1, reserved u16, acked u64, CRC-32C of the
// preceding 16 bytes u32, reserved u32.
const (
	cursorSlotLen = 32
	// cursorSlotOff is the offset of the second slot: a different
	// file-system block from the first, as for the reservation.
	cursorSlotOff  = 4096
	cursorFileSize = cursorSlotOff + cursorSlotLen
	cursorVersion  = 2
	cursorV1Size   = 24
)

var cursorMagic = [4]byte{'P', 'C', 'U', 'R'}

// cursorSlot is the content of one slot.
type cursorSlot struct {
	Gen   uint64 // the valid slot with the higher generation is current
	Acked uint64 // every record <= Acked was processed by the reader
}

func (c cursorSlot) encode(b []byte) {
	putSlot(b[:cursorSlotLen], cursorMagic, cursorVersion, 0, c.Gen, c.Acked)
}

// decodeCursorSlot decodes one version 2 slot; ok is false for any damage.
func decodeCursorSlot(b []byte) (cursorSlot, bool) {
	if !slotOK(b, cursorSlotLen, cursorMagic, cursorVersion) {
		return cursorSlot{}, false
	}
	return cursorSlot{Gen: binary.LittleEndian.Uint64(b[8:16]), Acked: binary.LittleEndian.Uint64(b[16:24])}, true
}

// cursorState is what a cursor file says.
type cursorState struct {
	// Acked is the reader's position: the current slot's.
	Acked uint64
	// High is the highest position a valid slot holds: every sequence up
	// to it may have been issued (a Seek can move a position back, so the
	// older slot may hold the higher one).
	High uint64
	// Torn is set when one slot of two is damaged (a write a power cut
	// interrupted, or damage): Acked is then the other slot's.
	Torn bool
}

// decodeCursor reads a cursor file's content: version 2 (the current of
// its two slots) or version 1.
func decodeCursor(b []byte) (cursorState, error) {
	if len(b) == cursorV1Size && [4]byte(b[0:4]) == cursorMagic && binary.LittleEndian.Uint16(b[4:6]) == 1 {
		if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:20]) {
			return cursorState{}, errors.New("cursor crc mismatch")
		}
		a := binary.LittleEndian.Uint64(b[8:16])
		return cursorState{Acked: a, High: a}, nil
	}
	if len(b) != cursorFileSize {
		return cursorState{}, fmt.Errorf("bad cursor file: %d bytes", len(b))
	}
	a, okA := decodeCursorSlot(b)
	c, okC := decodeCursorSlot(b[cursorSlotOff:])
	switch {
	case okA && okC:
		st := cursorState{Acked: a.Acked, High: max(a.Acked, c.Acked)}
		if c.Gen > a.Gen {
			st.Acked = c.Acked
		}
		return st, nil
	case okA:
		return cursorState{Acked: a.Acked, High: a.Acked, Torn: true}, nil
	case okC:
		return cursorState{Acked: c.Acked, High: c.Acked, Torn: true}, nil
	}
	return cursorState{}, errors.New("cursor crc mismatch in both slots")
}

// readCursors returns the cursor files of dir; damaged ones are reported
// through bad.
func readCursors(dir string, bad func(name string, err error)) (map[string]cursorState, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("buffer: list %s: %w", dir, err)
	}
	out := make(map[string]cursorState)
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), cursorSuffix)
		if !ok || !validName(name) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			var st cursorState
			if st, err = decodeCursor(b); err == nil {
				out[name] = st
				continue
			}
		}
		bad(name, err)
	}
	return out, nil
}

// cursorFile is a reader's open version 2 cursor file; guarded by
// Log.curMu.
type cursorFile struct {
	f   *os.File
	gen uint64 // generation of the slot written last
}

// createCursor writes a version 2 cursor file holding acked in both slots
// (tmp file, fsync, rename; the caller fsyncs the directory) and opens it
// for writes in place.
func createCursor(path string, acked uint64) (*cursorFile, error) {
	b := make([]byte, cursorFileSize)
	cursorSlot{Gen: 1, Acked: acked}.encode(b)
	cursorSlot{Gen: 2, Acked: acked}.encode(b[cursorSlotOff:])
	if err := writeFileSync(path, b); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", filepath.Base(path), err)
	}
	return &cursorFile{f: f, gen: 2}, nil
}

// write makes acked durable in the slot after the current one, in place:
// the current slot is left intact, so a torn write leaves the previous
// position readable. The file's size and blocks do not change, so
// fdatasync flushes only the slot's page (no journal commit for
// metadata). A failed write or sync is not retried on the same slot.
func (cf *cursorFile) write(acked uint64) error {
	next := cursorSlot{Gen: cf.gen + 1, Acked: acked}
	var b [cursorSlotLen]byte
	next.encode(b[:])
	off := int64(0)
	if next.Gen%2 == 0 {
		off = cursorSlotOff
	}
	cf.gen = next.Gen
	_, err := cf.f.WriteAt(b[:], off)
	if err == nil {
		err = fdatasync(cf.f)
	}
	if err != nil {
		return fmt.Errorf("buffer: write %s: %w", filepath.Base(cf.f.Name()), err)
	}
	return nil
}

func (cf *cursorFile) close() {
	if cf != nil {
		cf.f.Close()
	}
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
	for name, st := range cs {
		acked := st.Acked
		if st.Torn {
			l.log.Warn("buffer: cursor file: one slot damaged (a write cut short by a power cut, or damage); reader resumes at the other",
				"reader", name, "acked", acked)
		}
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
// DropOldest a log fills the disk to the last block; a cursor file written
// for the first time in this run is a new file that replaces the old one:
// then the oldest segment is dropped (as the policy would for a record)
// and the write tried once more. (Writes in place need no free space.)
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
// written: in place into the reader's open version 2 file (fdatasync), or,
// the first time in this run, as a new version 2 file (tmp file, fsync,
// rename, fsync the directory).
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
	created := false
	for _, j := range jobs {
		var err error
		if j.r.cf != nil {
			err = j.r.cf.write(j.acked)
		} else {
			j.r.cf, err = createCursor(filepath.Join(l.dir, j.r.name+cursorSuffix), j.acked)
			created = created || err == nil
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.mu.Lock()
		j.r.saved = j.acked
		l.mu.Unlock()
	}
	if created {
		if err := syncDir(l.dir); err != nil {
			errs = append(errs, err)
		}
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

// closeCursors closes the readers' cursor files (at Close).
func (l *Log) closeCursors() {
	l.curMu.Lock()
	defer l.curMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.readers {
		r.cf.close()
		r.cf = nil
	}
}
