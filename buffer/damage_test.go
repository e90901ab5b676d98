package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// readAll drains a fresh reader and returns the sequences it got, checking
// every payload.
func readAll(t *testing.T, l *Log, name string) []uint64 {
	t.Helper()
	r, err := l.Reader(name)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for {
		l.mu.Lock()
		done := r.next >= l.next
		l.mu.Unlock()
		if done {
			return seqs
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		recs, err := r.Read(ctx, nil, 0)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return seqs
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for _, rec := range recs {
			if !bytes.Equal(rec.Payload, payload(rec.Seq)) {
				t.Fatalf("record %d: bad payload %q", rec.Seq, rec.Payload)
			}
			seqs = append(seqs, rec.Seq)
		}
	}
}

// frameOffsets returns the offset of every frame in a segment file.
func frameOffsets(t *testing.T, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, reason := decodeHeader(b)
	if reason != "" {
		t.Fatalf("%s: %s", path, reason)
	}
	var offs []int64
	for off := h.dataOffset(); off < int64(len(b)); {
		offs = append(offs, off)
		off += frameOverhead + int64(binary.LittleEndian.Uint32(b[off:]))
	}
	return offs
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dst, 0o755)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// makeLog writes n records with small segments and closes the log.
func makeLog(t *testing.T, n int) (string, Options) {
	t.Helper()
	dir := t.TempDir()
	o := Options{SegmentBytes: 1 << 10, MaxBytes: 1 << 20}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, n, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, o
}

func wantSeqs(t *testing.T, got []uint64, want []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("record %d: got seq %d, want %d", i, got[i], want[i])
		}
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestDamageTruncateTailEveryOffset(t *testing.T) {
	src, o := makeLog(t, 40)
	nums, _ := listSegments(src)
	tail := segName(nums[len(nums)-1])
	offs := frameOffsets(t, filepath.Join(src, tail))
	if len(offs) < 2 {
		t.Fatalf("tail holds %d records, want >= 2", len(offs))
	}
	fi, _ := os.Stat(filepath.Join(src, tail))
	h, _, _ := readHeader(filepath.Join(src, tail))
	lastSeq := h.First + uint64(len(offs)) - 1
	for cut := offs[len(offs)-2]; cut <= fi.Size(); cut++ {
		dir := filepath.Join(t.TempDir(), "c")
		copyDir(t, src, dir)
		if err := os.Truncate(filepath.Join(dir, tail), cut); err != nil {
			t.Fatal(err)
		}
		want := lastSeq
		switch {
		case cut < offs[len(offs)-1]:
			want = lastSeq - 2
		case cut < fi.Size():
			want = lastSeq - 1
		}
		l, err := Open(dir, o)
		if err != nil {
			t.Fatalf("cut %d: Open: %v", cut, err)
		}
		// The log was closed cleanly at lastSeq: the records cut are
		// counted, and their sequences are not given again.
		if lost := l.Stats().Lost; lost != lastSeq-want {
			t.Fatalf("cut %d: lost %d, want %d", cut, lost, lastSeq-want)
		}
		if last, err := l.Append(context.Background(), [][]byte{payload(lastSeq + 1)}); err != nil || last != lastSeq+1 {
			t.Fatalf("cut %d: Append after recovery: last %d err %v, want %d", cut, last, err, lastSeq+1)
		}
		wantSeqs(t, readAll(t, l, "r"), append(seqRange(1, want), lastSeq+1))
		l.Close()
	}
}

func TestDamageSealedSegment(t *testing.T) {
	cases := []struct {
		name  string
		field int64 // offset within the frame
		mut   func(b []byte)
	}{
		{"payload bit", frameOverhead + 3, func(b []byte) { b[0] ^= 0x10 }},
		{"length bit", 1, func(b []byte) { b[0] ^= 0x01 }},
		{"crc bit", 5, func(b []byte) { b[0] ^= 0x80 }},
		{"length 0", 0, func(b []byte) { binary.LittleEndian.PutUint32(b, 0) }},
		{"length 2^31", 0, func(b []byte) { binary.LittleEndian.PutUint32(b, 1<<31) }},
		{"length max", 0, func(b []byte) { binary.LittleEndian.PutUint32(b, ^uint32(0)) }},
		{"sequence", 8, func(b []byte) { binary.LittleEndian.PutUint64(b, 1<<63) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, o := makeLog(t, 80)
			nums, _ := listSegments(dir)
			if len(nums) < 3 {
				t.Fatalf("got %d segments, want >= 3", len(nums))
			}
			path := filepath.Join(dir, segName(nums[1]))
			h, _, _ := readHeader(path)
			next, _, _ := readHeader(filepath.Join(dir, segName(nums[2])))
			offs := frameOffsets(t, path)
			k := 3 // damage the 4th record of the second segment
			b, _ := os.ReadFile(path)
			tc.mut(b[offs[k]+tc.field:])
			os.WriteFile(path, b, 0o644)

			vr, err := Verify(dir)
			if err != nil {
				t.Fatal(err)
			}
			if vr.OK() || vr.Problems[0].Path != path || vr.Problems[0].Offset != offs[k] || vr.Lost != 1 {
				t.Fatalf("Verify: got %+v (lost %d), want one record lost at %s offset %d", vr.Problems, vr.Lost, path, offs[k])
			}
			l := openT(t, dir, o)
			bad := h.First + uint64(k)
			_ = next
			// Only the damaged record is lost: reading resumes at the
			// next valid record of the same segment.
			want := append(seqRange(1, bad-1), seqRange(bad+1, 80)...)
			wantSeqs(t, readAll(t, l, "r"), want)
			if got := l.Stats().Lost; got != 1 {
				t.Fatalf("lost: got %d, want 1", got)
			}
			// A second reader crossing the same damage does not count it again.
			readAll(t, l, "r2")
			if got := l.Stats().Lost; got != 1 {
				t.Fatalf("lost after second reader: got %d, want 1", got)
			}
		})
	}
}

// TestDamageTailLength damages the length of the second record of the
// tail: recovery resynchronises at the third, so only that record is lost
// and nothing is cut.
func TestDamageTailLength(t *testing.T) {
	for _, n := range []uint32{0, 1 << 31, ^uint32(0), 5} {
		dir, o := makeLog(t, 40)
		path := lastSegPath(t, dir)
		h, _, _ := readHeader(path)
		offs := frameOffsets(t, path)
		if len(offs) < 3 {
			t.Fatalf("tail holds %d records, want >= 3", len(offs))
		}
		b, _ := os.ReadFile(path)
		binary.LittleEndian.PutUint32(b[offs[1]:], n)
		os.WriteFile(path, b, 0o644)
		l := openT(t, dir, o)
		wantSeqs(t, readAll(t, l, "r"), append(seqRange(1, h.First), seqRange(h.First+2, 40)...))
		if st := l.Stats(); st.NextSeq != 41 || st.Lost != 1 {
			t.Fatalf("length %d: next %d, lost %d; want 41, 1", n, st.NextSeq, st.Lost)
		}
	}
}

func TestDamageMissingMiddleSegment(t *testing.T) {
	dir, o := makeLog(t, 80)
	nums, _ := listSegments(dir)
	h2, _, _ := readHeader(filepath.Join(dir, segName(nums[2])))
	h3, _, _ := readHeader(filepath.Join(dir, segName(nums[3])))
	os.Remove(filepath.Join(dir, segName(nums[2])))
	vr, err := Verify(dir)
	if err != nil || vr.OK() || vr.Lost != h3.First-h2.First {
		t.Fatalf("Verify: got %+v %v", vr, err)
	}
	l := openT(t, dir, o)
	if st := l.Stats(); st.MissingSegments != 1 {
		t.Fatalf("missing: got %d, want 1", st.MissingSegments)
	}
	want := append(seqRange(1, h2.First-1), seqRange(h3.First, 80)...)
	wantSeqs(t, readAll(t, l, "r"), want)
	if got := l.Stats().Lost; got != h3.First-h2.First {
		t.Fatalf("lost: got %d, want %d", got, h3.First-h2.First)
	}
}

// TestDamageSegmentHeader: a byte flipped in one copy of a header costs
// nothing (the other copy is read); both copies damaged, the segment is
// set aside and the rest is served.
func TestDamageSegmentHeader(t *testing.T) {
	for _, both := range []bool{false, true} {
		dir, o := makeLog(t, 80)
		nums, _ := listSegments(dir)
		for _, i := range []int{1, len(nums) - 1} { // a sealed segment and the tail
			path := filepath.Join(dir, segName(nums[i]))
			b, _ := os.ReadFile(path)
			b[2] ^= 0xff
			if both {
				b[headerCopy+20] ^= 0xff
			}
			os.WriteFile(path, b, 0o644)
		}
		l := openT(t, dir, o)
		got := readAll(t, l, "r")
		st := l.Stats()
		if !both {
			if st.DamagedSegments != 0 || st.Lost != 0 {
				t.Fatalf("one copy damaged: %d damaged segments, %d lost; want 0, 0", st.DamagedSegments, st.Lost)
			}
			wantSeqs(t, got, seqRange(1, 80))
			continue
		}
		if st.DamagedSegments != 2 {
			t.Fatalf("damaged: got %d, want 2", st.DamagedSegments)
		}
		if len(got) == 0 || got[0] != 1 {
			t.Fatalf("did not serve the intact records: %v", got)
		}
		// The tail's sequences are not given again.
		if last, err := l.Append(context.Background(), [][]byte{[]byte("new")}); err != nil || last <= 80 {
			t.Fatalf("Append after losing the tail's header: %d %v, want > 80", last, err)
		}
	}
}

func TestDamageCursorFromFuture(t *testing.T) {
	dir, o := makeLog(t, 20)
	if err := os.WriteFile(filepath.Join(dir, "sink"+cursorSuffix), cursorFileV2(1_000_000), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "junk"+cursorSuffix), []byte("garbage"), 0o644)
	if vr, _ := Verify(dir); vr.OK() {
		t.Fatal("Verify: cursor past the data not reported")
	}
	l := openT(t, dir, o)
	st := l.Stats()
	if c := st.Cursors[1]; c.Name != "sink" || c.Acked != 20 || c.Next != 21 {
		t.Fatalf("cursor: got %+v, want clamped to 20", c)
	}
	if c := st.Cursors[0]; c.Name != "junk" || c.Next != 1 {
		t.Fatalf("damaged cursor: got %+v, want restart at 1", c)
	}
	// A cursor says sequences up to 1,000,000 may have been issued: new
	// records go past it.
	appendN(t, l, 1_000_001, 1, 1)
	wantSeqs(t, readAll(t, l, "sink"), []uint64{1_000_001})
}

func TestInspectAndDump(t *testing.T) {
	dir, _ := makeLog(t, 50)
	rep, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FirstSeq != 1 || rep.NextSeq != 51 || rep.Records != 50 || len(rep.Segments) < 2 {
		t.Fatalf("Inspect: got %+v", rep)
	}
	var got []uint64
	err = Dump(dir, 10, 5, func(r Record) error {
		if !bytes.Equal(r.Payload, payload(r.Seq)) {
			t.Fatalf("Dump payload %d: %q", r.Seq, r.Payload)
		}
		got = append(got, r.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, got, seqRange(10, 14))
	stop := errors.New("stop")
	if err := Dump(dir, 0, 0, func(Record) error { return stop }); err != stop {
		t.Fatalf("Dump error: got %v", err)
	}
	if _, err := Inspect(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("Inspect of a missing dir: no error")
	}
}

// FuzzSegmentReader feeds arbitrary bytes to the segment header decoder
// and scanner (with resynchronisation and the tail-cut count): they must
// return records or errors, never panic, never allocate beyond one maximum
// record, and only return records whose CRC matches, in increasing order.
func FuzzSegmentReader(f *testing.F) {
	const salt = 0x1234abcd
	seg := make([]byte, headerSize)
	segHeader{Num: 1, First: 1, Created: 1, Gap: 1, Salt: salt}.encode(seg)
	for i := uint64(1); i <= 5; i++ {
		seg = appendFrame(seg, i, payload(i), salt)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add(seg[:headerSize+3])
	flipped := bytes.Clone(seg)
	flipped[headerSize+20] ^= 1
	f.Add(flipped)
	hdr := bytes.Clone(seg)
	hdr[5] ^= 0xff
	f.Add(hdr)
	huge := bytes.Clone(seg)
	binary.LittleEndian.PutUint32(huge[headerSize:], 1<<31)
	f.Add(huge)
	v1 := make([]byte, headerSizeV1)
	copy(v1, segMagic[:])
	binary.LittleEndian.PutUint16(v1[4:6], 1)
	binary.LittleEndian.PutUint64(v1[16:24], 1)
	binary.LittleEndian.PutUint32(v1[32:36], crc32.Checksum(v1[0:32], castagnoli))
	for i := uint64(1); i <= 3; i++ {
		v1 = appendFrame(v1, i, payload(i), 0)
	}
	f.Add(v1)
	f.Add([]byte{})
	const maxRecord = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		off, next, s := min(int64(headerSize), int64(len(data))), uint64(1), uint32(0)
		if h, reason := decodeHeader(data); reason == "" {
			off, next, s = min(h.dataOffset(), int64(len(data))), h.First, h.Salt
		}
		var sc scanner
		sc.reset(bytes.NewReader(data), "fuzz", off, int64(len(data)), next, s, maxRecord)
		skips := 0
		sc.onSkip = func(sk skip) {
			skips++
			if sk.To <= sk.Off || sk.Next <= sk.From {
				t.Fatalf("bad skip %+v", sk)
			}
		}
		var last uint64
		for i := 0; ; i++ {
			seq, p, err := sc.scan(true)
			if len(p) > maxRecord {
				t.Fatalf("payload of %d bytes above max", len(p))
			}
			if cap(sc.buf) > max(readBufSize, maxRecord+frameOverhead) {
				t.Fatalf("buffer grew to %d", cap(sc.buf))
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("unexpected error type: %v", err)
				}
				if errors.Is(err, ErrCorrupt) {
					if n, err := sc.countCut(); err == nil && n > uint64(len(data)) {
						t.Fatalf("counted %d cut records in %d bytes", n, len(data))
					}
				}
				return
			}
			if seq <= last && i > 0 {
				t.Fatalf("sequence %d after %d", seq, last)
			}
			last = seq
			if i > len(data) || skips > len(data) {
				t.Fatal("scanner does not advance")
			}
		}
	})
}

// FuzzReservation feeds arbitrary bytes to the reservation file decoder:
// it never panics, and what it accepts encodes back to the same slot.
func FuzzReservation(f *testing.F) {
	b := make([]byte, reserveSlotOff+reserveSlotLen)
	reservation{Gen: 7, Limit: 1 << 20, Clean: true, Run: 5}.encode(b)
	reservation{Gen: 8, Limit: 2 << 20}.encode(b[reserveSlotOff:])
	f.Add(b)
	f.Add(b[:reserveSlotLen])
	torn := bytes.Clone(b)
	torn[reserveSlotOff+3] ^= 1
	f.Add(torn)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, st := decodeReservation(data)
		if st == reserveLost {
			return
		}
		var enc [reserveSlotLen]byte
		r.encode(enc[:])
		if r2, ok := decodeSlot(enc[:]); !ok || r2 != r {
			t.Fatalf("round trip: %+v -> %+v %v", r, r2, ok)
		}
	})
}

// TestResyncWorkBounded damages a record whose payload was crafted to hold
// a plausible frame header (a large length, the next sequence) every 16
// bytes: resynchronisation must not compute a CRC over a large frame at each
// of them (it gives up within its budget; the rest of the segment then
// counts as lost), and must never return a fake record.
func TestResyncWorkBounded(t *testing.T) {
	const salt, maxRecord = 0x5eed, 64 << 10
	seg := make([]byte, headerSize)
	segHeader{Num: 1, First: 1, Gap: 1, Salt: salt}.encode(seg)
	seg = appendFrame(seg, 1, []byte("before"), salt)
	hostile := make([]byte, maxRecord-64)
	for i := 0; i+frameOverhead <= len(hostile); i += frameOverhead {
		binary.LittleEndian.PutUint32(hostile[i:], maxRecord/2)
		binary.LittleEndian.PutUint64(hostile[i+8:], 3)
	}
	at := int64(len(seg))
	seg = appendFrame(seg, 2, hostile, salt)
	seg = appendFrame(seg, 3, []byte("after"), salt)
	seg[at+5] ^= 1 // damage the CRC of the hostile record
	var sc scanner
	sc.reset(bytes.NewReader(seg), "hostile", headerSize, int64(len(seg)), 1, salt, maxRecord)
	var got []uint64
	var err error
	for {
		var seq uint64
		if seq, _, err = sc.scan(true); err != nil {
			break
		}
		got = append(got, seq)
	}
	if budget := 4*int64(maxRecord) + 8*(int64(len(seg))-at); sc.crcWork > budget || sc.crcWork < maxRecord {
		t.Fatalf("resync computed CRCs over %d bytes; want some, within the budget %d", sc.crcWork, budget)
	}
	if len(got) < 1 || got[0] != 1 || len(got) > 2 || len(got) == 2 && got[1] != 3 {
		t.Fatalf("got records %v, want 1 (and 3 at most)", got)
	}
	if len(got) == 1 && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("scan ended with %v, want the damage reported", err)
	}
}

// BenchmarkResync measures how fast a scanner resynchronises over a
// damaged record: the damaged frame holds a 1 MiB random payload that must
// be searched byte by byte. One op is one resynchronisation; SetBytes makes
// the rate MB/s of payload searched.
func BenchmarkResync(b *testing.B) {
	const salt = 42
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	seg := make([]byte, headerSize)
	segHeader{Num: 1, First: 1, Gap: 1, Salt: salt}.encode(seg)
	seg = appendFrame(seg, 1, big, salt)
	seg = appendFrame(seg, 2, []byte("after"), salt)
	seg[headerSize+5] ^= 1 // the CRC of record 1
	r := bytes.NewReader(seg)
	var sc scanner
	b.SetBytes(int64(len(big)))
	b.ReportAllocs()
	for b.Loop() {
		sc.reset(r, "bench", headerSize, int64(len(seg)), 1, salt, DefaultMaxRecordBytes)
		if seq, _, err := sc.scan(true); err != nil || seq != 2 {
			b.Fatalf("got %d %v, want record 2", seq, err)
		}
	}
}
