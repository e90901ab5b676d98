package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
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
	var offs []int64
	for off := int64(headerSize); off < int64(len(b)); {
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
		wantSeqs(t, readAll(t, l, "r"), seqRange(1, want))
		if last, err := l.Append(context.Background(), [][]byte{payload(want + 1)}); err != nil || last != want+1 {
			t.Fatalf("cut %d: Append after recovery: last %d err %v, want %d", cut, last, err, want+1)
		}
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
			if vr.OK() || vr.Problems[0].Path != path || vr.Problems[0].Offset != offs[k] {
				t.Fatalf("Verify: got %+v, want a problem at %s offset %d", vr.Problems, path, offs[k])
			}
			l := openT(t, dir, o)
			bad := h.First + uint64(k)
			want := append(seqRange(1, bad-1), seqRange(next.First, 80)...)
			wantSeqs(t, readAll(t, l, "r"), want)
			if got := l.Stats().Lost; got != next.First-bad {
				t.Fatalf("lost: got %d, want %d", got, next.First-bad)
			}
			// A second reader crossing the same damage does not count it again.
			readAll(t, l, "r2")
			if got := l.Stats().Lost; got != next.First-bad {
				t.Fatalf("lost after second reader: got %d, want %d", got, next.First-bad)
			}
		})
	}
}

func TestDamageTailLength(t *testing.T) {
	for _, n := range []uint32{0, 1 << 31, ^uint32(0)} {
		dir, o := makeLog(t, 40)
		nums, _ := listSegments(dir)
		path := filepath.Join(dir, segName(nums[len(nums)-1]))
		h, _, _ := readHeader(path)
		offs := frameOffsets(t, path)
		b, _ := os.ReadFile(path)
		binary.LittleEndian.PutUint32(b[offs[1]:], n)
		os.WriteFile(path, b, 0o644)
		l := openT(t, dir, o)
		wantSeqs(t, readAll(t, l, "r"), seqRange(1, h.First))
		if st := l.Stats(); st.NextSeq != h.First+1 {
			t.Fatalf("length %d: next %d, want %d", n, st.NextSeq, h.First+1)
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

func TestDamageSegmentHeader(t *testing.T) {
	dir, o := makeLog(t, 80)
	nums, _ := listSegments(dir)
	path := filepath.Join(dir, segName(nums[1]))
	b, _ := os.ReadFile(path)
	b[2] ^= 0xff
	os.WriteFile(path, b, 0o644)
	l := openT(t, dir, o)
	if st := l.Stats(); st.DamagedSegments != 1 {
		t.Fatalf("damaged: got %d", st.DamagedSegments)
	}
	if got := readAll(t, l, "r"); len(got) == 0 || got[len(got)-1] != 80 {
		t.Fatalf("did not serve the intact records: %v", got)
	}
}

func TestDamageCursorFromFuture(t *testing.T) {
	dir, o := makeLog(t, 20)
	if err := os.WriteFile(filepath.Join(dir, "sink"+cursorSuffix), encodeCursor(1_000_000), 0o644); err != nil {
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
	appendN(t, l, 21, 1, 1)
	wantSeqs(t, readAll(t, l, "sink"), []uint64{21})
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

// FuzzSegmentReader feeds arbitrary bytes to the segment scanner: it must
// return records or errors, never panic, and never allocate beyond one
// maximum record.
func FuzzSegmentReader(f *testing.F) {
	var seg []byte
	seg = append(seg, make([]byte, headerSize)...)
	segHeader{Num: 1, First: 1, Created: 1}.encode(seg)
	for i := uint64(1); i <= 5; i++ {
		seg = appendFrame(seg, i, payload(i))
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add(seg[:headerSize+3])
	flipped := bytes.Clone(seg)
	flipped[headerSize+20] ^= 1
	f.Add(flipped)
	huge := bytes.Clone(seg)
	binary.LittleEndian.PutUint32(huge[headerSize:], 1<<31)
	f.Add(huge)
	f.Add([]byte{})
	const maxRecord = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, reason := decodeHeader(data); reason == "" {
			_ = h.First
		}
		var sc scanner
		sc.reset(bytes.NewReader(data), "fuzz", min(headerSize, int64(len(data))), int64(len(data)), 0, maxRecord)
		for i := 0; ; i++ {
			_, p, err := sc.scan(true)
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
				return
			}
			if i > len(data) {
				t.Fatal("scanner does not advance")
			}
		}
	})
}
