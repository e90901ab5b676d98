package buffer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pspf/pspf-edge/internal/atomicfile"
)

// segment is the in-memory record of one segment file.
type segment struct {
	num     uint64
	first   uint64 // sequence of its first record
	gap     uint64 // header Gap: gap..first-1 are not loss; the previous segment ends before gap
	created int64  // unix nanos from the header
	flags   uint16
	version uint16
	salt    uint32 // seeds its frames' CRC
	data    int64  // offset of its first record (the header's size)
	size    int64  // bytes of the file that hold valid data (header included)

	// failed is set when an fsync of this segment failed: it is sealed and
	// its records are never reported durable.
	failed error
	// counted holds the sequence ranges of its damage already counted in
	// Log.lost, so that every reader crossing the same damage (and the
	// recovery scan) counts it once.
	counted []seqSpan
}

// seqSpan is the sequences From..To-1.
type seqSpan struct{ From, To uint64 }

// countOnce adds r to s.counted and returns how many of its sequences were
// not counted before. s.counted stays sorted and disjoint.
func (s *segment) countOnce(r seqSpan) uint64 {
	if r.To <= r.From {
		return 0
	}
	n := r.To - r.From
	merged := r
	out := s.counted[:0:0]
	for _, c := range s.counted {
		if c.To < merged.From || c.From > merged.To {
			out = append(out, c)
			continue
		}
		lo, hi := max(c.From, r.From), min(c.To, r.To)
		if lo < hi {
			n -= hi - lo
		}
		merged = seqSpan{min(merged.From, c.From), max(merged.To, c.To)}
	}
	// out is sorted and disjoint from merged: put merged in its place (not
	// slices.SortFunc: its copy of the generic sort for seqSpan was 8 KB
	// of the stripped binary).
	i := 0
	for i < len(out) && out[i].From < merged.From {
		i++
	}
	out = append(out, seqSpan{})
	copy(out[i+1:], out[i:])
	out[i] = merged
	s.counted = out
	return n
}

// hasData reports whether the segment holds at least one record's bytes.
func (s *segment) hasData() bool { return s.size > s.data }

// lossEnd is the sequence before which the records of the segment before
// s end, and whether loss may be counted up to it (not for a version 1
// segment marked as a discontinuity: its gap is not recorded).
func (s *segment) lossEnd() (uint64, bool) {
	return s.gap, s.flags&flagDiscontinuity == 0
}

func segName(num uint64) string { return fmt.Sprintf("%020d%s", num, segSuffix) }

func (l *Log) segPath(num uint64) string { return filepath.Join(l.dir, segName(num)) }

// listSegments returns the segment numbers found in dir, sorted.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("buffer: list %s: %w", dir, err)
	}
	var nums []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	return nums, nil
}

// readHeader reads and checks the header of a segment file.
func readHeader(path string) (segHeader, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return segHeader{}, 0, fmt.Errorf("buffer: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return segHeader{}, 0, fmt.Errorf("buffer: stat segment: %w", err)
	}
	var b [headerSize]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return segHeader{}, 0, fmt.Errorf("buffer: read segment header: %w", err)
	}
	h, reason := decodeHeader(b[:n])
	if reason != "" {
		return h, fi.Size(), &CorruptError{Path: path, Offset: 0, Reason: reason}
	}
	return h, fi.Size(), nil
}

// syncDir fsyncs a directory so that creates, renames and removes in it
// survive a power cut.
func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	return nil
}

// isNoSpace reports a full disk (or quota).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// isReadOnly reports a read-only file system or a permission refusal.
func isReadOnly(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// createSegment writes a new segment file holding only its header (with
// the log's salt; gap <= first, see segHeader.Gap), fsyncs nothing (the
// caller's fsync round covers it: file, then directory).
func (l *Log) createSegment(num, first, gap uint64) (*segment, *os.File, error) {
	path := l.segPath(num)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: create segment: %w", err)
	}
	gap = min(gap, first)
	s := &segment{num: num, first: first, gap: gap, created: l.opts.Now().UnixNano(), version: formatVersion,
		salt: l.salt, data: headerSize, size: headerSize}
	var b [headerSize]byte
	segHeader{Num: num, First: first, Created: s.created, Gap: gap, Salt: l.salt}.encode(b[:])
	if _, err := f.WriteAt(b[:], 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("buffer: write segment header: %w", err)
	}
	return s, f, nil
}
