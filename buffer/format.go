package buffer

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// On-disk layout; see FORMAT.md.
const (
	headerSize    = 40
	frameOverhead = 16
	formatVersion = 1

	// flagDiscontinuity marks a segment whose first sequence does not follow
	// the previous segment on purpose (records released from memory without
	// being written), so the gap is not counted as loss.
	flagDiscontinuity = 1 << 0

	segSuffix    = ".seg"
	cursorSuffix = ".cursor"
	lockName     = "LOCK"
	readBufSize  = 128 << 10
)

var (
	segMagic   = [4]byte{'P', 'S', 'E', 'G'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// segHeader is the fixed header at the start of every segment file.
type segHeader struct {
	Num     uint64
	First   uint64
	Created int64
	Flags   uint16
}

func (h segHeader) encode(b []byte) {
	_ = b[headerSize-1]
	copy(b[0:4], segMagic[:])
	binary.LittleEndian.PutUint16(b[4:6], formatVersion)
	binary.LittleEndian.PutUint16(b[6:8], h.Flags)
	binary.LittleEndian.PutUint64(b[8:16], h.Num)
	binary.LittleEndian.PutUint64(b[16:24], h.First)
	binary.LittleEndian.PutUint64(b[24:32], uint64(h.Created))
	binary.LittleEndian.PutUint32(b[32:36], crc32.Checksum(b[0:32], castagnoli))
	binary.LittleEndian.PutUint32(b[36:40], 0)
}

// decodeHeader returns a reason string instead of an error so that callers
// can wrap it with the path.
func decodeHeader(b []byte) (segHeader, string) {
	if len(b) < headerSize {
		return segHeader{}, fmt.Sprintf("short header: %d bytes", len(b))
	}
	if [4]byte(b[0:4]) != segMagic {
		return segHeader{}, "bad magic"
	}
	if v := binary.LittleEndian.Uint16(b[4:6]); v != formatVersion {
		return segHeader{}, fmt.Sprintf("unsupported version %d", v)
	}
	if crc32.Checksum(b[0:32], castagnoli) != binary.LittleEndian.Uint32(b[32:36]) {
		return segHeader{}, "header crc mismatch"
	}
	return segHeader{
		Flags:   binary.LittleEndian.Uint16(b[6:8]),
		Num:     binary.LittleEndian.Uint64(b[8:16]),
		First:   binary.LittleEndian.Uint64(b[16:24]),
		Created: int64(binary.LittleEndian.Uint64(b[24:32])),
	}, ""
}

// appendFrame appends one framed record to dst.
func appendFrame(dst []byte, seq uint64, payload []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, frameOverhead+len(payload))[:n+frameOverhead+len(payload)]
	putFrame(dst[n:], seq, payload)
	return dst
}

// putFrame encodes one record into f, which is frameOverhead+len(payload)
// bytes long. It first lays the length out just before the sequence, so
// that length, sequence and payload are contiguous and the CRC takes one
// pass over them; then it moves the length to its place and stores the CRC
// where the length was.
func putFrame(f []byte, seq uint64, payload []byte) {
	_ = f[frameOverhead-1]
	binary.LittleEndian.PutUint32(f[4:8], uint32(len(payload)))
	binary.LittleEndian.PutUint64(f[8:16], seq)
	copy(f[frameOverhead:], payload)
	binary.LittleEndian.PutUint32(f[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(f[4:8], crc32.Update(0, castagnoli, f[4:]))
}

// frameCRC is CRC-32C over length, sequence and payload.
func frameCRC(hdr, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[0:4])
	c = crc32.Update(c, castagnoli, hdr[8:16])
	return crc32.Update(c, castagnoli, payload)
}

// frameStatus is the outcome of parseFrame.
type frameStatus int

const (
	frameOK    frameStatus = iota
	frameShort             // b holds only part of the frame; need says how much
	frameBad               // corrupt; reason says why
)

// parseFrame parses the frame at the start of b. The length is checked
// against maxRecord before anything else, so a corrupt length never causes
// a large allocation by the caller.
func parseFrame(b []byte, maxRecord int, wantSeq uint64) (seq uint64, payload []byte, need int, st frameStatus, reason string) {
	if len(b) < frameOverhead {
		return 0, nil, frameOverhead, frameShort, ""
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if uint64(n) > uint64(maxRecord) {
		return 0, nil, 0, frameBad, fmt.Sprintf("record length %d above max %d", n, maxRecord)
	}
	need = frameOverhead + int(n)
	if len(b) < need {
		return 0, nil, need, frameShort, ""
	}
	payload = b[frameOverhead:need]
	if frameCRC(b[:frameOverhead], payload) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, nil, 0, frameBad, "crc mismatch"
	}
	seq = binary.LittleEndian.Uint64(b[8:16])
	if wantSeq != 0 && seq != wantSeq {
		return 0, nil, 0, frameBad, fmt.Sprintf("sequence %d, want %d", seq, wantSeq)
	}
	return seq, payload, need, frameOK, ""
}

// scanner reads the frames of one segment file through a reusable buffer.
// Memory use is bounded by max(readBufSize, maxRecord+frameOverhead).
type scanner struct {
	r         io.ReaderAt
	path      string
	end       int64 // bytes of the file that may be read
	off       int64 // file offset of the next frame
	next      uint64
	maxRecord int

	buf    []byte
	bufOff int64 // file offset of buf[0]
	n      int   // valid bytes in buf
}

// reset points the scanner at a file whose next frame at off has sequence
// next (0: any).
func (s *scanner) reset(r io.ReaderAt, path string, off, end int64, next uint64, maxRecord int) {
	s.r, s.path, s.off, s.end, s.next, s.maxRecord = r, path, off, end, next, maxRecord
	s.bufOff, s.n = off, 0
	if s.buf == nil {
		s.buf = make([]byte, readBufSize)
	}
}

// errNeedRefill is returned by scan when refill is false and the buffer
// holds no complete frame.
var errNeedRefill = fmt.Errorf("buffer: need refill")

// scan returns the next record. The payload aliases the scanner's buffer:
// it stays valid until a call with refill true. It returns io.EOF at end,
// or a *CorruptError. With refill false it never reads the file and
// returns errNeedRefill instead.
func (s *scanner) scan(refill bool) (uint64, []byte, error) {
	for {
		if s.off >= s.end {
			return 0, nil, io.EOF
		}
		lo := int(s.off - s.bufOff)
		seq, payload, need, st, reason := parseFrame(s.buf[lo:s.n], s.maxRecord, s.next)
		switch st {
		case frameOK:
			s.off += int64(need)
			s.next = seq + 1
			return seq, payload, nil
		case frameBad:
			return 0, nil, &CorruptError{Path: s.path, Offset: s.off, Seq: s.next, Reason: reason}
		}
		if s.off+int64(need) > s.end {
			return 0, nil, &CorruptError{Path: s.path, Offset: s.off, Seq: s.next,
				Reason: fmt.Sprintf("frame of %d bytes runs past end of data at %d", need, s.end)}
		}
		if !refill {
			return 0, nil, errNeedRefill
		}
		if err := s.fill(lo, need); err != nil {
			return 0, nil, err
		}
	}
}

// fill moves the unread bytes to the front and reads more, growing the
// buffer only to fit one frame already checked against maxRecord.
func (s *scanner) fill(lo, need int) error {
	if need > len(s.buf) {
		nb := make([]byte, need)
		copy(nb, s.buf[lo:s.n])
		s.buf = nb
	} else {
		copy(s.buf, s.buf[lo:s.n])
	}
	s.n -= lo
	s.bufOff = s.off
	want := min(int64(len(s.buf)-s.n), s.end-(s.bufOff+int64(s.n)))
	if want <= 0 {
		return nil
	}
	m, err := s.r.ReadAt(s.buf[s.n:s.n+int(want)], s.bufOff+int64(s.n))
	s.n += m
	if m == 0 && err != nil {
		if err == io.EOF {
			// The file is shorter than we were told: treat it as a cut tail.
			return &CorruptError{Path: s.path, Offset: s.off, Seq: s.next, Reason: "unexpected end of file"}
		}
		return fmt.Errorf("buffer: read %s: %w", s.path, err)
	}
	return nil
}
