package buffer

import (
	"encoding/binary"
)

// memTail holds the Memory kind's newest records as encoded frames, in
// sequence order, contiguous: buf[head:] are live and the first has
// sequence first. When empty, first is the next sequence to append.
type memTail struct {
	buf   []byte
	head  int
	first uint64
	base  int64 // stream offset of buf[0]; stays valid across compaction
}

func (m *memTail) reset(next uint64) {
	m.base += int64(len(m.buf))
	m.buf = m.buf[:0]
	m.head = 0
	m.first = next
}

func (m *memTail) live() int64 { return int64(len(m.buf) - m.head) }

// frameLen is the length of the frame at buf[i].
func (m *memTail) frameLen(i int) int {
	return frameOverhead + int(binary.LittleEndian.Uint32(m.buf[i:i+4]))
}

// offsetOf returns the index in buf of the frame with sequence seq, which
// must be in [first, first+records).
func (m *memTail) offsetOf(seq uint64) int {
	i := m.head
	for s := m.first; s < seq; s++ {
		i += m.frameLen(i)
	}
	return i
}

// pop releases n bytes holding count frames from the head.
func (m *memTail) pop(n int, count uint64) {
	m.head += n
	m.first += count
	if m.head == len(m.buf) {
		m.reset(m.first)
		return
	}
	if m.head >= 64<<10 && m.head > len(m.buf)/2 {
		live := copy(m.buf, m.buf[m.head:])
		m.base += int64(m.head)
		m.buf = m.buf[:live]
		m.head = 0
	}
}

// cut removes the frames with sequence > seq (seq >= first-1).
func (m *memTail) cut(seq uint64, next uint64) {
	if seq+1 >= next {
		return
	}
	m.buf = m.buf[:m.offsetOf(seq+1)]
}

// spillTo writes the oldest in-memory records to segments until at most
// keep bytes stay in memory. A no-op for the Disk kind.
func (l *Log) spillTo(keep int64) error {
	m := &l.mem
	for m.live() > keep {
		end, count := m.head, uint64(0)
		for end < len(m.buf) && int64(len(m.buf)-end) > keep && end-m.head < wbufLimit {
			end += m.frameLen(end)
			count++
		}
		n, err := l.writeFramesLocked(m.buf[m.head:end], m.first, int(count))
		if n > 0 {
			i := m.head
			for k := 0; k < n; k++ {
				i += m.frameLen(i)
			}
			m.pop(i-m.head, uint64(n))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// spillLocked writes every in-memory record to segments (all) — on Close.
func (l *Log) spillLocked(all bool) error {
	if l.opts.Kind != Memory || !all {
		return nil
	}
	if err := l.spillTo(0); err != nil {
		l.log.Error("buffer: could not write memory records to disk on close; they are lost",
			"records", l.next-l.mem.first, "err", err)
		l.lost += l.next - l.mem.first
		return err
	}
	if l.diskNext < l.next {
		// The newest records were released unwritten: start an empty
		// segment at next so that sequences never go back after a restart.
		return l.rotateLocked(l.next)
	}
	return nil
}

// releaseAckedLocked frees in-memory records every reader has acked; they
// are never written.
func (l *Log) releaseAckedLocked(minAcked uint64) {
	m := &l.mem
	n, count := 0, uint64(0)
	for i := m.head; i < len(m.buf) && m.first+count <= minAcked; {
		fl := m.frameLen(i)
		i += fl
		n += fl
		count++
	}
	if count > 0 {
		m.pop(n, count)
		l.wakeWritersLocked()
	}
}
