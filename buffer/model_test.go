package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// logModel is the in-memory model the log is checked against: the
// payload of every readable sequence and each reader's acked position and
// read position.
type logModel struct {
	recs  map[uint64][]byte
	next  uint64
	acked map[string]uint64
	pos   map[string]uint64 // next sequence the reader may return
	read  map[string]uint64 // last sequence the reader returned
}

func (m *logModel) expected(name string, limit int) []uint64 {
	var out []uint64
	for s := m.pos[name]; s < m.next && len(out) < limit; s++ {
		if _, ok := m.recs[s]; ok {
			out = append(out, s)
		}
	}
	return out
}

func TestModel(t *testing.T) {
	for _, kind := range []Kind{Disk, Memory} {
		t.Run(string(kind), func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) { runModel(rt, kind) })
		})
	}
}

func runModel(t *rapid.T, kind Kind) {
	dir, err := os.MkdirTemp("", "buffer-model-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	o := Options{Kind: kind, SegmentBytes: 1 << 10, MaxBytes: 64 << 20, Sync: SyncNone, MaxRecordBytes: 300}
	if kind == Memory {
		o.MemoryBytes = 1 << 10
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	names := []string{"a", "b"}
	m := &logModel{recs: map[uint64][]byte{}, next: 1, acked: map[string]uint64{}, pos: map[string]uint64{}, read: map[string]uint64{}}
	readers := map[string]*Reader{}
	openReaders := func() {
		for _, n := range names {
			r, err := l.Reader(n)
			if err != nil {
				t.Fatal(err)
			}
			readers[n] = r
			m.pos[n] = m.acked[n] + 1
			m.read[n] = m.acked[n]
		}
	}
	for _, n := range names {
		m.acked[n] = 0
	}
	// damaged holds, per segment, the offset of the frame "corrupt"
	// damaged: frame boundaries are found by walking lengths, which a
	// damaged length would mislead, so a segment is damaged once (until
	// recovery cuts that frame off).
	damaged := map[uint64]int{}
	openReaders()
	reopen := func() {
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if l, err = Open(dir, o); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		for _, n := range names {
			if m.acked[n] >= m.next {
				m.acked[n] = m.next - 1
			}
		}
		openReaders()
	}
	t.Repeat(map[string]func(*rapid.T){
		"append": func(t *rapid.T) {
			ps := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 0, 300), 1, 8).Draw(t, "batch")
			last, err := l.Append(context.Background(), ps)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			for _, p := range ps {
				m.recs[m.next] = p
				m.next++
			}
			if last != m.next-1 {
				t.Fatalf("Append last: got %d, want %d", last, m.next-1)
			}
		},
		"read": func(t *rapid.T) {
			name := rapid.SampledFrom(names).Draw(t, "reader")
			limit := rapid.IntRange(1, 20).Draw(t, "limit")
			want := m.expected(name, limit)
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			if len(want) > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
			}
			defer cancel()
			recs, err := readers[name].Read(ctx, make([]Record, 0, limit), 0)
			if len(want) == 0 {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Read with nothing to read: got %v, %v", recs, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(recs) == 0 || len(recs) > len(want) {
				t.Fatalf("Read: got %d records, want 1..%d", len(recs), len(want))
			}
			for i, r := range recs {
				if r.Seq != want[i] || !bytes.Equal(r.Payload, m.recs[r.Seq]) {
					t.Fatalf("Read record %d: got seq %d, want %d (payload equal %v)", i, r.Seq, want[i], bytes.Equal(r.Payload, m.recs[r.Seq]))
				}
			}
			m.read[name] = recs[len(recs)-1].Seq
			m.pos[name] = m.read[name] + 1
		},
		"ack": func(t *rapid.T) {
			name := rapid.SampledFrom(names).Draw(t, "reader")
			if m.read[name] <= m.acked[name] {
				return
			}
			seq := rapid.Uint64Range(m.acked[name]+1, m.read[name]).Draw(t, "seq")
			if err := readers[name].Ack(seq); err != nil {
				t.Fatalf("Ack: %v", err)
			}
			m.acked[name] = seq
		},
		"reopen": func(t *rapid.T) { reopen() },
		"corrupt": func(t *rapid.T) {
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			nums, _ := listSegments(dir)
			i := rapid.IntRange(0, len(nums)-1).Draw(t, "segment")
			path := filepath.Join(dir, segName(nums[i]))
			b, _ := os.ReadFile(path)
			h, _ := decodeHeader(b)
			var offs []int
			for off := int(h.dataOffset()); off+frameOverhead <= len(b); off += frameOverhead + int(binary.LittleEndian.Uint32(b[off:])) {
				offs = append(offs, off)
			}
			if _, ok := damaged[nums[i]]; !ok && len(offs) > 0 {
				k := rapid.IntRange(0, len(offs)-1).Draw(t, "frame")
				end := len(b)
				if k+1 < len(offs) {
					end = offs[k+1]
				}
				bit := rapid.IntRange(0, (end-offs[k])*8-1).Draw(t, "bit")
				b[offs[k]+bit/8] ^= 1 << (bit % 8)
				os.WriteFile(path, b, 0o644)
				damaged[nums[i]] = offs[k]
				// Only the damaged record is lost (the log was closed
				// cleanly, so even a cut at the tail is known and its
				// sequences are not given again).
				delete(m.recs, h.First+uint64(k))
			}
			if l, err = Open(dir, o); err != nil {
				t.Fatalf("reopen after corruption: %v", err)
			}
			// A damaged frame recovery cut from the tail is gone: the
			// segment can be damaged again.
			if fi, err := os.Stat(path); err == nil {
				if off, ok := damaged[nums[i]]; ok && fi.Size() <= int64(off) {
					delete(damaged, nums[i])
				}
			}
			for _, n := range names {
				if m.acked[n] >= m.next {
					m.acked[n] = m.next - 1
				}
			}
			openReaders()
			if st := l.Stats(); st.NextSeq > m.next {
				t.Fatalf("next after corruption: got %d, want at most %d", st.NextSeq, m.next)
			}
		},
	})

}
