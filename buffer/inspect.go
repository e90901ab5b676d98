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
	Version uint16 // format version of its header (1 or 2)
	First   uint64 // sequence of its first record
	// Gap <= First: sequences Gap..First-1 are not in the log and are not
	// lost (unused after a crash, or released from memory); the previous
	// segment's records end before Gap.
	Gap     uint64
	Bytes   int64
	Created time.Time
	Flags   uint16

	salt uint32
	data int64
}

// Reservation describes the sequence reservation file (FORMAT.md).
type Reservation struct {
	State string // "ok", "one slot damaged", "damaged" or "missing"
	Limit uint64 // no sequence at or above it was issued
	Clean bool   // written by a clean close: Limit is where the log ended
	Run   uint64 // with Clean: records Run..Limit-1 were held without a gap
}

// Report is what Inspect finds.
type Report struct {
	Dir          string
	Segments     []SegmentInfo
	Bytes        int64  // bytes of all segment files
	FirstSeq     uint64 // first record of the oldest segment
	NextSeq      uint64 // sequence after the last intact record of the tail
	Records      uint64 // records in the segments' ranges: exact unless segments are damaged
	OldestRecord time.Time
	Cursors      []CursorStats // Next is Acked+1, Lag counts from NextSeq
	Missing      []uint64      // segment numbers missing between present ones
	Damaged      []string      // files with a bad header or cursor
	Reservation  Reservation
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
		err := scanFile(filepath.Join(dir, segName(tail.Number)), tail, 0, nil, func(seq uint64, _ []byte) error {
			rep.NextSeq = seq + 1
			return nil
		})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return rep, err
		}
		for i, si := range segs {
			end := rep.NextSeq
			if i+1 < len(segs) {
				end = segs[i+1].Gap
			}
			if end > si.First {
				rep.Records += end - si.First
			}
		}
	}
	rep.Reservation = readReservationInfo(dir)
	cs, err := readCursors(dir, func(name string, err error) {
		rep.Damaged = append(rep.Damaged, name+cursorSuffix+": "+err.Error())
	})
	if err != nil {
		return rep, err
	}
	for name, st := range cs {
		acked := st.Acked
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
		if h.Repaired {
			rep.Damaged = append(rep.Damaged, filepath.Join(dir, segName(num))+": header damaged, its second copy is intact")
		}
		si := SegmentInfo{Number: num, Version: h.Version, First: h.First, Gap: h.Gap, Bytes: size,
			Created: time.Unix(0, h.Created), Flags: h.Flags, salt: h.Salt, data: h.dataOffset()}
		segs = append(segs, si)
		rep.Segments = append(rep.Segments, si)
		rep.Bytes += size
	}
	return segs, nil
}

// readReservationInfo describes the reservation file of dir.
func readReservationInfo(dir string) Reservation {
	r, st, err := readReservation(dir)
	if err != nil {
		return Reservation{State: err.Error()}
	}
	info := Reservation{Limit: r.Limit, Clean: r.Clean, Run: r.Run}
	switch st {
	case reserveOK:
		info.State = "ok"
	case reserveDamaged:
		info.State = "one slot damaged"
	case reserveLost:
		info.State = "damaged"
	default:
		info.State = "missing"
	}
	return info
}

// scanFile calls fn for each intact record of a segment file with sequence
// >= from, resynchronising over damaged records (reported to onSkip if not
// nil) and stopping at damage with no valid record after it (returned as
// *CorruptError).
func scanFile(path string, si SegmentInfo, from uint64, onSkip func(skip), fn func(uint64, []byte) error) error {
	return scanFileAt(path, si, from, onSkip, nil, fn)
}

// scanFileAt is scanFile that, when the scan ends at damage, calls atDamage
// with the scanner positioned at it (the file still open).
func scanFileAt(path string, si SegmentInfo, from uint64, onSkip func(skip), atDamage func(*scanner), fn func(uint64, []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	defer f.Close()
	var sc scanner
	sc.reset(f, path, si.data, si.Bytes, si.First, si.salt, maxRecordLimit)
	sc.onSkip = onSkip
	err = sc.scanAll(from, fn)
	var ce *CorruptError
	if atDamage != nil && errors.As(err, &ce) && ce.Reason != "unexpected end of file" {
		atDamage(&sc)
	}
	return err
}

// scanAll runs the scanner to the end of its file.
func (sc *scanner) scanAll(from uint64, fn func(uint64, []byte) error) error {
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
// damaged records (each damaged stretch, the records it cost and the bytes
// skipped), damage at the end of a segment, sequence gaps, missing
// segments, a damaged or missing sequence reservation and damaged cursor
// files. The error is for I/O failures only.
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
	res := readReservationInfo(dir)
	resPath := filepath.Join(dir, reserveName)
	switch {
	case res.State == "missing" && len(segs) > 0 && segs[len(segs)-1].Version >= 2:
		vr.Problems = append(vr.Problems, Problem{Path: resPath, Offset: -1, What: "sequence reservation missing"})
	case res.State != "ok" && res.State != "missing":
		vr.Problems = append(vr.Problems, Problem{Path: resPath, Offset: -1, What: "sequence reservation: " + res.State})
	}
	var next uint64
	for i, si := range segs {
		path := filepath.Join(dir, segName(si.Number))
		vr.Segments++
		vr.Bytes += si.Bytes
		if end := si.Gap; i > 0 && end > next && si.Flags&flagDiscontinuity == 0 {
			vr.Lost += end - next
			vr.Problems = append(vr.Problems, Problem{Path: path, Offset: -1, Seq: next,
				What: fmt.Sprintf("records %d-%d missing before this segment", next, end-1)})
		}
		next = si.First
		onSkip := func(sk skip) {
			vr.Lost += sk.Next - sk.From
			vr.Problems = append(vr.Problems, Problem{Path: path, Offset: sk.Off, Seq: sk.From,
				What: fmt.Sprintf("%s; %d records (%d-%d) lost, %d bytes skipped to the next valid record",
					sk.Reason, sk.Next-sk.From, sk.From, sk.Next-1, sk.To-sk.Off)})
		}
		cut := -1 // damaged records at the end of the last segment
		atDamage := func(sc *scanner) {
			if n, err := sc.countCut(); err == nil && i == len(segs)-1 {
				cut = int(n)
			}
		}
		err := scanFileAt(path, si, 0, onSkip, atDamage, func(seq uint64, _ []byte) error {
			vr.Records++
			next = seq + 1
			return nil
		})
		var ce *CorruptError
		if errors.As(err, &ce) {
			what := fmt.Sprintf("%s; %d bytes after it unreadable", ce.Reason, si.Bytes-ce.Offset)
			switch {
			case cut == 0:
				what += " (a write cut short by a crash: it was not durable)"
			case cut > 0:
				what += fmt.Sprintf(" (%d damaged records)", cut)
				if !res.Clean {
					vr.Lost += uint64(cut)
				}
			}
			vr.Problems = append(vr.Problems, Problem{Path: path, Offset: ce.Offset, Seq: ce.Seq, What: what})
		} else if err != nil {
			return vr, err
		}
	}
	if from := max(next, res.Run); res.Clean && len(segs) > 0 && res.Limit > from {
		vr.Lost += res.Limit - from
		vr.Problems = append(vr.Problems, Problem{Path: resPath, Offset: -1, Seq: from,
			What: fmt.Sprintf("the log was closed cleanly at %d: records %d-%d missing at its end", res.Limit, from, res.Limit-1)})
	}
	cs, err := readCursors(dir, func(string, error) {})
	if err != nil {
		return vr, err
	}
	for name, st := range cs {
		acked := st.Acked
		if st.Torn {
			vr.Problems = append(vr.Problems, Problem{Path: filepath.Join(dir, name+cursorSuffix), Offset: -1,
				What: fmt.Sprintf("cursor: one slot damaged (a write cut short, or damage); the other says %d", acked)})
		}
		if len(segs) > 0 && acked >= next && acked >= res.Limit {
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
		err := scanFile(filepath.Join(dir, segName(si.Number)), si, from, nil, func(seq uint64, p []byte) error {
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
