package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/internal/testkit"
	"github.com/pspf/pspf-edge/internal/wait"
)

// cursorFileV2 is a version 2 cursor file whose slots hold gens 1 and 2,
// both at acked.
func cursorFileV2(acked uint64) []byte {
	b := make([]byte, cursorFileSize)
	cursorSlot{Gen: 1, Acked: acked}.encode(b)
	cursorSlot{Gen: 2, Acked: acked}.encode(b[cursorSlotOff:])
	return b
}

// cursorFileV1 is a cursor file as version 1 wrote it.
func cursorFileV1(acked uint64) []byte {
	c := make([]byte, cursorV1Size)
	copy(c, "PCUR")
	binary.LittleEndian.PutUint16(c[4:6], 1)
	binary.LittleEndian.PutUint64(c[8:16], acked)
	binary.LittleEndian.PutUint32(c[16:20], crc32.Checksum(c[:16], castagnoli))
	return c
}

// FuzzCursor feeds arbitrary bytes to the cursor file decoder: it never
// panics, a valid slot it accepts encodes back to the same slot, and the
// position it returns is one a valid slot holds.
func FuzzCursor(f *testing.F) {
	b := cursorFileV2(5)
	cursorSlot{Gen: 3, Acked: 9}.encode(b)
	f.Add(b)
	torn := bytes.Clone(b)
	torn[7] ^= 1
	f.Add(torn)
	f.Add(cursorFileV1(42))
	f.Add(b[:cursorSlotLen])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeCursor(data)
		if err != nil {
			return
		}
		if st.High < st.Acked {
			t.Fatalf("high %d below acked %d", st.High, st.Acked)
		}
		if len(data) != cursorFileSize {
			return // version 1
		}
		found := false
		for _, off := range []int{0, cursorSlotOff} {
			s, ok := decodeCursorSlot(data[off:])
			if !ok {
				continue
			}
			found = found || s.Acked == st.Acked
			var enc [cursorSlotLen]byte
			s.encode(enc[:])
			if s2, ok := decodeCursorSlot(enc[:]); !ok || s2 != s {
				t.Fatalf("round trip: %+v -> %+v %v", s, s2, ok)
			}
		}
		if !found {
			t.Fatalf("acked %d is in no valid slot", st.Acked)
		}
	})
}

// TestCursorTornWrite cuts a cursor write short after every byte count (a
// power cut in the middle of it): the file then says the position before
// the write or, only once the slot is whole, the one after it; never
// anything else, and never nothing.
func TestCursorTornWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sink"+cursorSuffix)
	cf, err := createCursor(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.close()
	prev := uint64(10)
	for _, acked := range []uint64{20, 30, 40, 5} { // 5: a Seek back
		before, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := cf.write(acked); err != nil {
			t.Fatal(err)
		}
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		if cf.gen%2 == 0 {
			off = cursorSlotOff
		}
		for k := 0; k <= cursorSlotLen; k++ {
			img := bytes.Clone(before)
			copy(img[off:off+k], after[off:off+k])
			st, err := decodeCursor(img)
			if err != nil {
				t.Fatalf("write of %d cut after %d bytes: %v", acked, k, err)
			}
			want := prev
			if bytes.Equal(img, after) { // the rest was already in place
				want = acked
			}
			if st.Acked != want || st.High < want {
				t.Fatalf("write of %d cut after %d bytes: got %+v, want acked %d", acked, k, st, want)
			}
		}
		prev = acked
	}
}

// TestCursorWrittenInPlace: a reader's cursor file is created once per run
// (a version 1 file is replaced by version 2 then); every later write
// goes into the same file in place: no new file, no rename, no directory
// fsync (version 1 wrote a new file and renamed it every time, three
// updates of the file system's journal per write). A torn write found at
// Open costs the reader only the records acked by that write, with a
// WARN; Verify reports it.
func TestCursorWrittenInPlace(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	o := Options{AckInterval: time.Millisecond}
	l := openT(t, dir, o)
	appendN(t, l, 1, 100, 10)
	l.Close()
	path := filepath.Join(dir, "sink"+cursorSuffix)
	if err := os.WriteFile(path, cursorFileV1(10), 0o640); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, o)
	r, err := l.Reader("sink")
	if err != nil {
		t.Fatal(err)
	}
	persisted := func(acked uint64) {
		t.Helper()
		wait.For(t, 5*time.Second, "the cursor persisted", func() bool {
			b, err := os.ReadFile(path)
			st, err2 := decodeCursor(b)
			return err == nil && err2 == nil && st.Acked == acked && len(b) == cursorFileSize
		})
	}
	if err := r.Ack(20); err != nil {
		t.Fatal(err)
	}
	persisted(20)
	first, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []uint64{30, 40, 50} {
		if err := r.Ack(a); err != nil {
			t.Fatal(err)
		}
		persisted(a)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(first, fi) {
			t.Fatalf("the cursor file was replaced by another (ack %d), want written in place", a)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file: %v", err)
	}
	// A power cut now, in the middle of the write of 50: its slot torn.
	crash := filepath.Join(t.TempDir(), "crash")
	copyDir(t, dir, crash)
	l.Close()
	b, err := os.ReadFile(filepath.Join(crash, "sink"+cursorSuffix))
	if err != nil {
		t.Fatal(err)
	}
	cur := 0
	if s, _ := decodeCursorSlot(b[cursorSlotOff:]); s.Acked == 50 {
		cur = cursorSlotOff
	}
	b[cur+20] ^= 0xff
	if err := os.WriteFile(filepath.Join(crash, "sink"+cursorSuffix), b, 0o640); err != nil {
		t.Fatal(err)
	}
	vr, err := Verify(crash)
	if err != nil || vr.OK() || !strings.Contains(vr.Problems[0].What, "one slot damaged") {
		t.Fatalf("Verify of a torn cursor: %+v %v", vr, err)
	}
	var logs testkit.LogBuffer
	o.Logger = logs.JSONLogger(slog.LevelDebug)
	l2 := openT(t, crash, o)
	if n := len(logs.Records(t, "one slot damaged")); n != 1 {
		t.Fatalf("%d WARNs about the torn cursor, want 1:\n%s", n, logs.String())
	}
	r2, err := l2.Reader("sink")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := r2.Read(ctx, nil, 0)
	if err != nil || len(recs) == 0 || recs[0].Seq != 41 {
		t.Fatalf("after the torn write of 50 the reader resumes at %v (%v), want 41", recs, err)
	}
}

// TestCursorWritesFollowTheRate: a reader acking 100 records a second has
// its cursor written about every 10 s (cursorWaitFactor × AckInterval, a
// page of flash each time; it was every second), one acking 2,000 a
// second every AckInterval; at any moment the cursor on disk is at most
// cursorBatch records or one AckInterval's behind the ack, which is what a
// crash makes it send again.
func TestCursorWritesFollowTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		r, err := l.Reader("sink")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "sink"+cursorSuffix)
		onDisk := func() (gen, acked uint64) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range []int{0, cursorSlotOff} {
				if s, ok := decodeCursorSlot(b[off:]); ok && s.Gen > gen {
					gen, acked = s.Gen, s.Acked
				}
			}
			return gen, acked
		}
		time.Sleep(2 * DefaultAckInterval) // a new reader's file is written at once
		seq := uint64(1)
		phase := func(perTick int, d time.Duration) (writes uint64) {
			synctest.Wait()
			gen0, _ := onDisk()
			for start := time.Now(); time.Since(start) < d; {
				last := appendN(t, l, seq, perTick, perTick)
				seq = last + 1
				if err := r.Ack(last); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond)
				synctest.Wait()
				if _, acked := onDisk(); last-acked > max(cursorBatch, uint64(perTick)*100)+uint64(perTick) {
					t.Fatalf("acked %d, on disk %d: a crash would send %d again", last, acked, last-acked)
				}
			}
			gen1, _ := onDisk()
			return gen1 - gen0
		}
		if w := phase(1, 60*time.Second); w < 4 || w > 7 {
			t.Fatalf("%d cursor writes in 60 s at 100 records/s, want about 6", w)
		}
		if w := phase(20, 10*time.Second); w < 8 || w > 11 {
			t.Fatalf("%d cursor writes in 10 s at 2,000 records/s, want about 10", w)
		}
	})
}
