package buffer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// The offline functions below read a log directory without taking its lock
// and never modify it. On a log that is being written they see a snapshot
// that may end in a partly written record.

// SegmentInfo describes one segment file.
type SegmentInfo struct {
	Number  uint64
	First   uint64 // sequence of its first record
	Bytes   int64
	Created time.Time
	Flags   uint16
}

// Report is what Inspect finds.
type Report struct {
	Dir          string
	Segments     []SegmentInfo
	Bytes        int64  // bytes of all segment files
	FirstSeq     uint64 // first record of the oldest segment
	NextSeq      uint64 // sequence after the last intact record of the tail
	Records      uint64 // NextSeq-FirstSeq: exact unless segments are damaged
	OldestRecord time.Time
	Cursors      []CursorStats // Next is Acked+1, Lag counts from NextSeq
	Missing      []uint64      // segment numbers missing between present ones
	Damaged      []string      // files with a bad header or cursor
}

// Inspect summarises a log directory from segment headers and a scan of
// the tail segment only, so it is quick on a large backlog.
func Inspect(dir string) (Report, error) {
	rep := Report{Dir: dir}
	segs, err := loadHeaders(dir, &rep)
	if err != nil {
		return rep, err
	}
	if len(segs) > 0 {
		rep.FirstSeq = segs[0].First
		rep.OldestRecord = segs[0].Created
		tail := segs[len(segs)-1]
		rep.NextSeq = tail.First
		err := scanFile(filepath.Join(dir, segName(tail.Number)), tail, 0, func(seq uint64, _ []byte) error {
			rep.NextSeq = seq + 1
			return nil
		})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return rep, err
		}
		rep.Records = rep.NextSeq - rep.FirstSeq
	}
	cs, err := readCursors(dir, func(name string, err error) {
		rep.Damaged = append(rep.Damaged, name+cursorSuffix+": "+err.Error())
	})
	if err != nil {
		return rep, err
	}
	for name, acked := range cs {
		c := CursorStats{Name: name, Acked: acked, Next: acked + 1}
		if rep.NextSeq > acked+1 {
			c.Lag = rep.NextSeq - 1 - acked
		}
		rep.Cursors = append(rep.Cursors, c)
	}
	sort.Slice(rep.Cursors, func(i, j int) bool { return rep.Cursors[i].Name < rep.Cursors[j].Name })
	return rep, nil
}

// loadHeaders reads every segment header, recording missing and damaged
// segments in rep.
func loadHeaders(dir string, rep *Report) ([]SegmentInfo, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	nums, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	var segs []SegmentInfo
	for i, num := range nums {
		if i > 0 && num != nums[i-1]+1 {
			for m := nums[i-1] + 1; m < num; m++ {
				rep.Missing = append(rep.Missing, m)
			}
		}
		h, size, err := readHeader(filepath.Join(dir, segName(num)))
		if err != nil {
			rep.Damaged = append(rep.Damaged, err.Error())
			continue
		}
		si := SegmentInfo{Number: num, First: h.First, Bytes: size, Created: time.Unix(0, h.Created), Flags: h.Flags}
		segs = append(segs, si)
		rep.Segments = append(rep.Segments, si)
		rep.Bytes += size
	}
	return segs, nil
}

// scanFile calls fn for each intact record of a segment file with sequence
// >= from, stopping at the first bad one (returned as *CorruptError).
func scanFile(path string, si SegmentInfo, from uint64, fn func(uint64, []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	defer f.Close()
	var sc scanner
	sc.reset(f, path, headerSize, si.Bytes, si.First, maxRecordLimit)
	for {
		seq, payload, err := sc.scan(true)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if seq < from {
			continue
		}
		if err := fn(seq, payload); err != nil {
			return err
		}
	}
}

// Problem is one finding of Verify.
type Problem struct {
	Path   string // file concerned
	Offset int64  // byte offset, -1 if not about a position
	Seq    uint64 // sequence concerned, 0 if unknown
	What   string
}

// String formats the problem as path: offset (seq): what.
func (p Problem) String() string {
	if p.Offset < 0 {
		return fmt.Sprintf("%s: %s", p.Path, p.What)
	}
	return fmt.Sprintf("%s: offset %d (seq %d): %s", p.Path, p.Offset, p.Seq, p.What)
}

// VerifyReport is what Verify finds.
type VerifyReport struct {
	Segments int
	Records  uint64 // intact records
	Bytes    int64
	Lost     uint64 // records missing from sequence gaps
	Problems []Problem
}

// OK reports whether Verify found no damage.
func (v VerifyReport) OK() bool { return len(v.Problems) == 0 }

// Verify reads every record of every segment and checks its CRC and
// sequence, and reports each problem with its file and offset: bad headers,
// bad records (and the bytes skipped after them), sequence gaps, missing
// segments and damaged cursor files. The error is for I/O failures only.
func Verify(dir string) (VerifyReport, error) {
	var rep Report
	var vr VerifyReport
	segs, err := loadHeaders(dir, &rep)
	if err != nil {
		return vr, err
	}
	for _, m := range rep.Missing {
		vr.Problems = append(vr.Problems, Problem{Path: filepath.Join(dir, segName(m)), Offset: -1, What: "segment missing"})
	}
	for _, d := range rep.Damaged {
		vr.Problems = append(vr.Problems, Problem{Path: dir, Offset: -1, What: d})
	}
	var next uint64
	for i, si := range segs {
		path := filepath.Join(dir, segName(si.Number))
		vr.Segments++
		vr.Bytes += si.Bytes
		if i > 0 && si.First > next && si.Flags&flagDiscontinuity == 0 {
			vr.Lost += si.First - next
			vr.Problems = append(vr.Problems, Problem{Path: path, Offset: -1, Seq: next,
				What: fmt.Sprintf("records %d-%d missing before this segment", next, si.First-1)})
		}
		next = si.First
		err := scanFile(path, si, 0, func(seq uint64, _ []byte) error {
			vr.Records++
			next = seq + 1
			return nil
		})
		var ce *CorruptError
		if errors.As(err, &ce) {
			vr.Problems = append(vr.Problems, Problem{Path: path, Offset: ce.Offset, Seq: ce.Seq,
				What: fmt.Sprintf("%s; %d bytes after it unreadable", ce.Reason, si.Bytes-ce.Offset)})
		} else if err != nil {
			return vr, err
		}
	}
	cs, err := readCursors(dir, func(string, error) {})
	if err != nil {
		return vr, err
	}
	for name, acked := range cs {
		if len(segs) > 0 && acked >= next {
			vr.Problems = append(vr.Problems, Problem{Path: filepath.Join(dir, name+cursorSuffix), Offset: -1,
				What: fmt.Sprintf("cursor at %d is past the last record %d", acked, next-1)})
		}
	}
	sort.SliceStable(vr.Problems, func(i, j int) bool { return vr.Problems[i].Path < vr.Problems[j].Path })
	return vr, nil
}

// Dump calls fn for each intact record with sequence >= from, in order, at
// most limit records (limit <= 0: all). Damaged parts are skipped (Verify
// reports them). The Record's Payload is valid only during the call. It
// stops at the first error fn returns and returns it.
func Dump(dir string, from uint64, limit int, fn func(Record) error) error {
	var rep Report
	segs, err := loadHeaders(dir, &rep)
	if err != nil {
		return err
	}
	errStop := errors.New("stop")
	n := 0
	for i, si := range segs {
		if i+1 < len(segs) && segs[i+1].First <= from {
			continue
		}
		err := scanFile(filepath.Join(dir, segName(si.Number)), si, from, func(seq uint64, p []byte) error {
			if limit > 0 && n >= limit {
				return errStop
			}
			n++
			return fn(Record{Seq: seq, Payload: p})
		})
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return err
		}
	}
	return nil
}
