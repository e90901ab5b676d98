package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// The sequence reservation (FORMAT.md, "Sequence reservation"): a small
// file with two CRC'd slots, written alternately and fsynced. A sequence is
// given to a record only below the reserved limit, and the limit is made
// durable before any sequence of a new block is appended, so a crash, a
// power cut or damage can never make the log issue a sequence twice: after
// a crash the log resumes at the limit, never below it.
const (
	reserveName = "SEQUENCE"
	// reserveBlock is how many sequences one reservation covers: one
	// small fsync per million records.
	reserveBlock = 1 << 20
	// reserveSlotOff is the offset of the second slot: a different
	// file-system block from the first, so that a torn write of one slot
	// cannot damage the other.
	reserveSlotOff = 4096
	reserveSlotLen = 40
	reserveVersion = 1
	// reserveOneSlot is how far past the surviving slot's limit the log
	// resumes when the other slot is damaged (it may have been the newer
	// one, at most one extension ahead: a block plus one batch).
	reserveOneSlot = 4 * reserveBlock
	// reserveJump is how far past the highest sequence found on disk the
	// log resumes when the reservation is lost on a log that holds data:
	// far beyond anything the lost reservation can have covered.
	reserveJump = 1 << 40

	// reserveClean is set by Close: limit is exactly the next sequence,
	// and every record below it was durable then.
	reserveClean = 1 << 0
)

var reserveMagic = [4]byte{'P', 'S', 'E', 'Q'}

// reservation is the content of one slot.
type reservation struct {
	Gen   uint64 // the slot with the higher valid generation is current
	Limit uint64 // no sequence >= Limit was ever issued
	Clean bool   // written by Close: Limit is the next sequence, all below durable
	// Run, in a clean slot: the sequences Run..Limit-1 were all held,
	// without a gap, by the newest segments (0: the whole log was
	// gap-free). It makes the count exact when the newest segments are
	// found deleted after a clean close.
	Run uint64
}

func (r reservation) encode(b []byte) {
	var flags uint16
	if r.Clean {
		flags |= reserveClean
	}
	putSlot(b[:reserveSlotLen], reserveMagic, reserveVersion, flags, r.Gen, r.Limit, r.Run)
}

// decodeSlot decodes one slot; ok is false for any damage.
func decodeSlot(b []byte) (reservation, bool) {
	if !slotOK(b, reserveSlotLen, reserveMagic, reserveVersion) {
		return reservation{}, false
	}
	return reservation{
		Gen:   binary.LittleEndian.Uint64(b[8:16]),
		Limit: binary.LittleEndian.Uint64(b[16:24]),
		Clean: binary.LittleEndian.Uint16(b[6:8])&reserveClean != 0,
		Run:   binary.LittleEndian.Uint64(b[24:32]),
	}, true
}

// reserveState says how much of the reservation file could be read.
type reserveState int

const (
	reserveOK      reserveState = iota // both slots valid
	reserveDamaged                     // one slot valid
	reserveLost                        // no valid slot
	reserveMissing                     // no file
)

// decodeReservation returns the current slot of a reservation file's
// content and how much of it was valid.
func decodeReservation(b []byte) (reservation, reserveState) {
	a, okA := decodeSlot(b)
	var c reservation
	okC := false
	if len(b) >= reserveSlotOff {
		c, okC = decodeSlot(b[reserveSlotOff:])
	}
	switch {
	case okA && okC:
		if c.Gen > a.Gen {
			return c, reserveOK
		}
		return a, reserveOK
	case okA:
		return a, reserveDamaged
	case okC:
		return c, reserveDamaged
	}
	return reservation{}, reserveLost
}

// readReservation reads the reservation file of dir.
func readReservation(dir string) (reservation, reserveState, error) {
	b, err := os.ReadFile(filepath.Join(dir, reserveName))
	if errors.Is(err, os.ErrNotExist) {
		return reservation{}, reserveMissing, nil
	}
	if err != nil {
		return reservation{}, reserveLost, fmt.Errorf("buffer: read %s: %w", reserveName, err)
	}
	r, st := decodeReservation(b)
	return r, st, nil
}

// reserveFile is the open reservation file of a Log.
type reserveFile struct {
	f   *os.File
	cur reservation
}

// createReservation writes a new reservation file holding r in both slots
// (tmp file, fsync, rename; the caller fsyncs the directory) and opens it.
func createReservation(dir string, r reservation) (*reserveFile, error) {
	b := make([]byte, reserveSlotOff+reserveSlotLen)
	r.encode(b)
	r.encode(b[reserveSlotOff:])
	path := filepath.Join(dir, reserveName)
	if err := writeFileSync(path, b); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", reserveName, err)
	}
	return &reserveFile{f: f, cur: r}, nil
}

// openReservation opens an existing reservation file whose current slot is
// cur.
func openReservation(dir string, cur reservation) (*reserveFile, error) {
	f, err := os.OpenFile(filepath.Join(dir, reserveName), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", reserveName, err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() < reserveSlotOff+reserveSlotLen {
		f.Close()
		return nil, fmt.Errorf("buffer: %s is short", reserveName)
	}
	return &reserveFile{f: f, cur: cur}, nil
}

// write makes limit (and clean) durable in the slot after the current one:
// the current slot is left intact, so a torn write leaves the previous
// state readable. A failed write or fsync is not retried on the same slot;
// the next write goes to the other one with a new generation.
func (rf *reserveFile) write(limit uint64, clean bool, run uint64) error {
	next := reservation{Gen: rf.cur.Gen + 1, Limit: limit, Clean: clean, Run: run}
	var b [reserveSlotLen]byte
	next.encode(b[:])
	off := int64(0)
	if next.Gen%2 == 1 {
		off = reserveSlotOff
	}
	_, err := rf.f.WriteAt(b[:], off)
	if err == nil {
		err = rf.f.Sync()
	}
	// Whatever happened, the slot at off may now hold anything: the next
	// write must use the other slot.
	rf.cur.Gen = next.Gen
	if err != nil {
		return fmt.Errorf("buffer: write %s: %w", reserveName, err)
	}
	rf.cur = next
	return nil
}

func (rf *reserveFile) close() error {
	if rf == nil || rf.f == nil {
		return nil
	}
	err := rf.f.Close()
	rf.f = nil
	return err
}

// putSlot encodes a slot of the reservation or a cursor file into b (its
// whole length): magic, version u16, flags u16, the u64 fields, CRC-32C
// of all that u32, reserved u32 = 0.
func putSlot(b []byte, magic [4]byte, version, flags uint16, fields ...uint64) {
	n := 8 + 8*len(fields)
	_ = b[n+7]
	copy(b[0:4], magic[:])
	binary.LittleEndian.PutUint16(b[4:6], version)
	binary.LittleEndian.PutUint16(b[6:8], flags)
	for i, v := range fields {
		binary.LittleEndian.PutUint64(b[8+8*i:], v)
	}
	binary.LittleEndian.PutUint32(b[n:n+4], crc32.Checksum(b[:n], castagnoli))
	binary.LittleEndian.PutUint32(b[n+4:n+8], 0)
}

// slotOK reports whether b starts with an intact slot of size bytes (as
// putSlot writes them) with the given magic and version.
func slotOK(b []byte, size int, magic [4]byte, version uint16) bool {
	n := size - 8
	return len(b) >= size && [4]byte(b[0:4]) == magic &&
		binary.LittleEndian.Uint16(b[4:6]) == version &&
		crc32.Checksum(b[:n], castagnoli) == binary.LittleEndian.Uint32(b[n:n+4])
}
