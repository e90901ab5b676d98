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
	headerSizeV1  = 40
	headerCopy    = 48 // one copy of the version 2 header
	headerSize    = 2 * headerCopy
	frameOverhead = 16
	formatVersion = 2

	// flagDiscontinuity marks a version 1 segment whose first sequence does
	// not follow the previous segment on purpose (records released from
	// memory without being written), so the gap is not counted as loss.
	// Version 2 records the gap itself (segHeader.Gap).
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
	Version uint16
	Num     uint64
	First   uint64
	Created int64
	Flags   uint16
	// Gap <= First: the sequences Gap..First-1 are not in the log and are
	// not lost (never issued, or counted when they were found missing).
	// The previous segment's records end before Gap. Version 1: Gap ==
	// First.
	Gap uint64
	// Salt seeds the CRC of every frame of the segment (0 for version 1),
	// so that a payload holding a copy of a frame never passes for one
	// when a reader resynchronises after damage.
	Salt uint32
	// Repaired is set by decodeHeader when one copy was damaged and the
	// other one used.
	Repaired bool
}

// dataOffset is where the records of a segment start.
func (h segHeader) dataOffset() int64 {
	if h.Version == 1 {
		return headerSizeV1
	}
	return headerSize
}

// encode writes a version 2 header (two identical copies) into b.
func (h segHeader) encode(b []byte) {
	_ = b[headerSize-1]
	c := b[:headerCopy]
	copy(c[0:4], segMagic[:])
	binary.LittleEndian.PutUint16(c[4:6], formatVersion)
	binary.LittleEndian.PutUint16(c[6:8], h.Flags)
	binary.LittleEndian.PutUint64(c[8:16], h.Num)
	binary.LittleEndian.PutUint64(c[16:24], h.First)
	binary.LittleEndian.PutUint64(c[24:32], uint64(h.Created))
	binary.LittleEndian.PutUint64(c[32:40], h.Gap)
	binary.LittleEndian.PutUint32(c[40:44], h.Salt)
	binary.LittleEndian.PutUint32(c[44:48], crc32.Checksum(c[0:44], castagnoli))
	copy(b[headerCopy:headerSize], c)
}

// decodeHeader decodes a version 1 or 2 header from the first bytes of a
// segment file. A version 2 header whose first copy is damaged is read
// from its second copy. It returns a reason string instead of an error so
// that callers can wrap it with the path.
func decodeHeader(b []byte) (segHeader, string) {
	if len(b) >= headerSizeV1 && [4]byte(b[0:4]) == segMagic && binary.LittleEndian.Uint16(b[4:6]) == 1 {
		if crc32.Checksum(b[0:32], castagnoli) != binary.LittleEndian.Uint32(b[32:36]) {
			return segHeader{}, "header crc mismatch"
		}
		h := segHeader{
			Version: 1,
			Flags:   binary.LittleEndian.Uint16(b[6:8]),
			Num:     binary.LittleEndian.Uint64(b[8:16]),
			First:   binary.LittleEndian.Uint64(b[16:24]),
			Created: int64(binary.LittleEndian.Uint64(b[24:32])),
		}
		h.Gap = h.First
		return h, ""
	}
	h, reason := decodeHeaderCopy(b)
	if reason == "" {
		return h, ""
	}
	if len(b) >= headerSize {
		if h2, r2 := decodeHeaderCopy(b[headerCopy:]); r2 == "" {
			h2.Repaired = true
			return h2, ""
		}
	}
	return segHeader{}, reason
}

func decodeHeaderCopy(b []byte) (segHeader, string) {
	if len(b) < headerCopy {
		return segHeader{}, fmt.Sprintf("short header: %d bytes", len(b))
	}
	if [4]byte(b[0:4]) != segMagic {
		return segHeader{}, "bad magic"
	}
	if v := binary.LittleEndian.Uint16(b[4:6]); v != formatVersion {
		return segHeader{}, fmt.Sprintf("unsupported version %d", v)
	}
	if crc32.Checksum(b[0:44], castagnoli) != binary.LittleEndian.Uint32(b[44:48]) {
		return segHeader{}, "header crc mismatch"
	}
	h := segHeader{
		Version: formatVersion,
		Flags:   binary.LittleEndian.Uint16(b[6:8]),
		Num:     binary.LittleEndian.Uint64(b[8:16]),
		First:   binary.LittleEndian.Uint64(b[16:24]),
		Created: int64(binary.LittleEndian.Uint64(b[24:32])),
		Gap:     binary.LittleEndian.Uint64(b[32:40]),
		Salt:    binary.LittleEndian.Uint32(b[40:44]),
	}
	if h.Gap > h.First {
		return segHeader{}, fmt.Sprintf("gap start %d after first sequence %d", h.Gap, h.First)
	}
	return h, ""
}

// appendFrame appends one framed record to dst.
func appendFrame(dst []byte, seq uint64, payload []byte, salt uint32) []byte {
	n := len(dst)
	dst = slices.Grow(dst, frameOverhead+len(payload))[:n+frameOverhead+len(payload)]
	putFrame(dst[n:], seq, payload, salt)
	return dst
}

// putFrame encodes one record into f, which is frameOverhead+len(payload)
// bytes long. It first lays the length out just before the sequence, so
// that length, sequence and payload are contiguous and the CRC takes one
// pass over them; then it moves the length to its place and stores the CRC
// where the length was.
func putFrame(f []byte, seq uint64, payload []byte, salt uint32) {
	_ = f[frameOverhead-1]
	binary.LittleEndian.PutUint32(f[4:8], uint32(len(payload)))
	binary.LittleEndian.PutUint64(f[8:16], seq)
	copy(f[frameOverhead:], payload)
	binary.LittleEndian.PutUint32(f[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(f[4:8], crc32.Update(salt, castagnoli, f[4:]))
}

// frameCRC is CRC-32C, seeded with the segment's salt, over length,
// sequence and payload.
func frameCRC(hdr, payload []byte, salt uint32) uint32 {
	c := crc32.Update(salt, castagnoli, hdr[0:4])
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
func parseFrame(b []byte, maxRecord int, wantSeq uint64, salt uint32) (seq uint64, payload []byte, need int, st frameStatus, reason string) {
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
	if frameCRC(b[:frameOverhead], payload, salt) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, nil, 0, frameBad, "crc mismatch"
	}
	seq = binary.LittleEndian.Uint64(b[8:16])
	if wantSeq != 0 && seq != wantSeq {
		return 0, nil, 0, frameBad, fmt.Sprintf("sequence %d, want %d", seq, wantSeq)
	}
	return seq, payload, need, frameOK, ""
}

// skip describes damage a scanner resynchronised over: bytes Off..To-1 of
// the file held no valid record, and records From..Next-1 were in them.
type skip struct {
	Off, To    int64
	From, Next uint64
	Reason     string // what was wrong with the frame at Off
}

// scanner reads the frames of one segment file through a reusable buffer.
// Memory use is bounded by max(readBufSize, maxRecord+frameOverhead).
//
// When a frame is damaged it resynchronises: it looks for the next valid
// frame after it (see resync), reports the stretch it skipped through
// onSkip and goes on from there, so that damage costs only the damaged
// frames.
type scanner struct {
	r         io.ReaderAt
	path      string
	end       int64 // bytes of the file that may be read
	off       int64 // file offset of the next frame
	next      uint64
	last      uint64 // highest sequence the segment may hold (bounds resync)
	maxRecord int
	salt      uint32
	// onSkip, when set, is called for each damaged stretch resynchronised
	// over, before the record after it is returned.
	onSkip func(skip)
	// crcWork counts the bytes resync computed CRCs over (for tests).
	crcWork int64

	buf    []byte
	bufOff int64 // file offset of buf[0]
	n      int   // valid bytes in buf
}

// reset points the scanner at a file whose next frame at off has sequence
// next (0: any), with frame CRCs seeded by salt. It clears last (no bound)
// and onSkip.
func (s *scanner) reset(r io.ReaderAt, path string, off, end int64, next uint64, salt uint32, maxRecord int) {
	s.r, s.path, s.off, s.end, s.next, s.salt, s.maxRecord = r, path, off, end, next, salt, maxRecord
	s.last, s.onSkip = ^uint64(0), nil
	s.bufOff, s.n = off, 0
	if s.buf == nil {
		s.buf = make([]byte, readBufSize)
	}
}

// errNeedRefill is returned by scan when refill is false and the buffer
// holds no complete frame (or a damaged one).
var errNeedRefill = fmt.Errorf("buffer: need refill")

// scan returns the next record. The payload aliases the scanner's buffer:
// it stays valid until a call with refill true. It returns io.EOF at end,
// or a *CorruptError when a frame is damaged and no valid frame follows
// it before end (the scanner then stays at the damaged frame). With refill
// false it never reads the file and returns errNeedRefill instead.
func (s *scanner) scan(refill bool) (uint64, []byte, error) {
	for {
		if s.off >= s.end {
			return 0, nil, io.EOF
		}
		lo := int(s.off - s.bufOff)
		seq, payload, need, st, reason := parseFrame(s.buf[lo:s.n], s.maxRecord, s.next, s.salt)
		switch st {
		case frameOK:
			s.off += int64(need)
			s.next = seq + 1
			return seq, payload, nil
		case frameShort:
			if s.off+int64(need) <= s.end {
				if !refill {
					return 0, nil, errNeedRefill
				}
				if err := s.fillAt(s.off, need); err != nil {
					return 0, nil, err
				}
				continue
			}
			reason = fmt.Sprintf("frame of %d bytes runs past end of data at %d", need, s.end)
		}
		if !refill {
			return 0, nil, errNeedRefill
		}
		ok, err := s.resync(reason)
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			return 0, nil, &CorruptError{Path: s.path, Offset: s.off, Seq: s.next, Reason: reason}
		}
	}
}

// resync looks for the first valid frame after the damaged one at s.off:
// a length within maxRecord, a sequence that can follow (above s.next, at
// most one record per frameOverhead bytes skipped, at most s.last), and a
// CRC that matches with the segment's salt. The cheap checks come first,
// so the CRC is computed only for the rare candidates that pass them; and
// the CRC work is bounded (a payload crafted to hold a fake frame header at
// every byte must not make a resync cost its length times the record
// size): past the budget it gives up, and the rest counts as lost. On
// success it reports the stretch skipped through onSkip, moves the scanner
// to that frame and returns true. It reads through the scanner's buffer
// and allocates at most one maximum record.
func (s *scanner) resync(reason string) (bool, error) {
	bad, from := s.off, s.next
	budget := 4*int64(s.maxRecord) + 8*(s.end-bad)
	for p := bad + 1; p+frameOverhead <= s.end; p++ {
		lo := int(p - s.bufOff)
		if lo+frameOverhead > s.n {
			if err := s.fillAt(p, frameOverhead); err != nil {
				return false, err
			}
			if lo = 0; s.n < frameOverhead {
				continue // the file is shorter than end: the next fill says so
			}
		}
		n := binary.LittleEndian.Uint32(s.buf[lo : lo+4])
		if uint64(n) > uint64(s.maxRecord) {
			continue
		}
		seq := binary.LittleEndian.Uint64(s.buf[lo+8 : lo+16])
		if seq > s.last || from != 0 && (seq <= from || seq-from > uint64(p-bad)/frameOverhead) {
			continue
		}
		need := frameOverhead + int(n)
		if p+int64(need) > s.end {
			continue
		}
		if budget -= int64(need); budget < 0 {
			return false, nil
		}
		s.crcWork += int64(need)
		if lo+need > s.n {
			if err := s.fillAt(p, need); err != nil {
				return false, err
			}
			if lo = 0; s.n < need {
				continue
			}
		}
		f := s.buf[lo : lo+need]
		if frameCRC(f[:frameOverhead], f[frameOverhead:], s.salt) != binary.LittleEndian.Uint32(f[4:8]) {
			continue
		}
		s.off, s.next = p, seq
		if s.onSkip != nil {
			s.onSkip(skip{Off: bad, To: p, From: from, Next: seq, Reason: reason})
		}
		return true, nil
	}
	return false, nil
}

// fillAt makes the buffer start at file offset p (p >= bufOff) and hold as
// much as fits, at least need bytes unless end comes first; it keeps the
// bytes already read from p on and grows the buffer only to fit one frame
// already checked against maxRecord.
func (s *scanner) fillAt(p int64, need int) error {
	lo := int(min(p-s.bufOff, int64(s.n)))
	if need > len(s.buf) {
		nb := make([]byte, need)
		copy(nb, s.buf[lo:s.n])
		s.buf = nb
	} else {
		copy(s.buf, s.buf[lo:s.n])
	}
	s.n -= lo
	s.bufOff = p
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

// countCut counts the damaged records in the bytes from s.off (a frame that
// failed its checks, with no valid frame after it) to s.end, as recovery
// cuts them. A complete frame counts: its bytes were all written, then
// damaged. A partial frame at the end, or zeros to the end, are a write the
// crash interrupted and do not count: that record was never durable. The
// exception is a partial frame that proves whole once its length is set to
// reach the end exactly: only its length was damaged.
func (s *scanner) countCut() (uint64, error) {
	nz := s.off // offset after the last byte that is not zero
	for p := s.off; p < s.end; {
		if err := s.fillAt(p, 1); err != nil {
			return 0, err
		}
		if s.n == 0 {
			break
		}
		chunk := s.buf[:s.n]
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != 0 {
				nz = p + int64(i) + 1
				break
			}
		}
		p += int64(len(chunk))
	}
	var count uint64
	seq := s.next
	for p := s.off; p < nz && s.end-p >= frameOverhead; {
		if err := s.fillAt(p, frameOverhead); err != nil {
			return count, err
		}
		n := int64(binary.LittleEndian.Uint32(s.buf[0:4]))
		if n > int64(s.maxRecord) {
			return count + 1, nil // no interrupted write leaves an impossible length
		}
		if p+frameOverhead+n <= s.end {
			count++
			seq++
			p += frameOverhead + n
			continue
		}
		if l := s.end - p - frameOverhead; l <= int64(s.maxRecord) {
			if err := s.fillAt(p, frameOverhead+int(l)); err != nil {
				return count, err
			}
			if s.n >= frameOverhead+int(l) {
				var h [frameOverhead]byte
				copy(h[:], s.buf[:frameOverhead])
				binary.LittleEndian.PutUint32(h[0:4], uint32(l))
				if frameCRC(h[:], s.buf[frameOverhead:frameOverhead+int(l)], s.salt) == binary.LittleEndian.Uint32(h[4:8]) &&
					binary.LittleEndian.Uint64(h[8:16]) == seq {
					count++
				}
			}
		}
		break
	}
	return count, nil
}
