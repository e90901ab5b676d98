package runner

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pspf/pspf-edge/agent"
)

// sinkBatch is the batch one round of a sink's loop delivers: the log
// records of one or more Reads of one cursor, then the same records decoded.
//
// Who owns what. A LogReader's payloads are valid only until its next Read
// (buffer.Reader hands out slices of its read buffer). The batch therefore
// keeps the records of its latest Read where the reader put them, and moves
// the payloads of every earlier Read into its own arena before the reader
// reads again: read calls own before each Read it makes. Both the log
// records (logs) and the arena are append-only while the batch is open: a
// Read writes only past the records held (it gets the free end of logs), a
// move only past the payloads moved (a full arena is replaced, not
// overwritten, and the payloads in the old one stay where they are). So no
// Read, and nothing the batch does, changes a record it already holds,
// whatever the decoder keeps of a payload. reset opens the next batch; what
// the last one held, read or decoded, must not be used after it.
type sinkBatch struct {
	logs     []LogRecord // the records read, in sequence order
	arena    []byte      // the payloads of logs[:owned]
	owned    int         // logs[:owned] have their payloads in arena
	moved    bool        // this batch moved payloads (it took more than one Read)
	maxBytes int         // the batch's payload bound: what arena grows to
	bytes    int         // payload bytes of logs

	// The records decoded from logs, reused from batch to batch, and the
	// log payload size of each (for pspf_sink_bytes_total).
	recs  []agent.Record
	sizes []int
}

func newSinkBatch(maxRecords, maxBytes int) *sinkBatch {
	return &sinkBatch{logs: make([]LogRecord, 0, maxRecords), maxBytes: maxBytes}
}

// reset opens the next batch. An arena the batch did not need is let go:
// it serves a backlog (full batches from several Reads); records that come
// one Read at a time need none.
func (b *sinkBatch) reset() {
	clear(b.logs) // the payloads alias a reader's buffer or the arena
	b.logs, b.owned, b.bytes = b.logs[:0], 0, 0
	if b.moved {
		b.arena = b.arena[:0]
	} else {
		b.arena = nil
	}
	b.moved = false
	b.recs, b.sizes = b.recs[:0], b.sizes[:0]
}

// len returns the number of records read.
func (b *sinkBatch) len() int { return len(b.logs) }

// last returns the sequence of the last record read; 0 for none.
func (b *sinkBatch) last() uint64 {
	if len(b.logs) == 0 {
		return 0
	}
	return b.logs[len(b.logs)-1].Seq
}

// read reads up to records more records (and about maxBytes more payload)
// from r into the batch, after those it holds, and returns how many it
// added. It first moves the payloads the batch holds out of r's buffer
// (own). A record at or below the last one held is not added again (a
// LogReader need not move on by itself before Ack: the test MemLog reads
// from its ack). On error it adds nothing.
func (b *sinkBatch) read(ctx context.Context, r LogReader, records, maxBytes int) (int, error) {
	b.own()
	n := len(b.logs)
	b.logs = slices.Grow(b.logs, records)
	got, err := r.Read(ctx, b.logs[n:n:n+records], maxBytes)
	if err != nil {
		return 0, err
	}
	k := 0
	if n > 0 {
		for k < len(got) && got[k].Seq <= b.logs[n-1].Seq {
			k++
		}
	}
	b.logs = append(b.logs, got[k:]...) // where Read wrote them, or from its own slice
	for _, lr := range b.logs[n:] {
		b.bytes += len(lr.Payload)
	}
	return len(b.logs) - n, nil
}

// own moves the payloads not in the arena yet into it. A full arena is
// replaced by a new one, never copied over: the payloads already moved keep
// pointing into the old one, which nothing writes again.
func (b *sinkBatch) own() {
	need := 0
	for _, lr := range b.logs[b.owned:] {
		need += len(lr.Payload)
	}
	if need == 0 {
		b.owned = len(b.logs)
		return
	}
	if cap(b.arena)-len(b.arena) < need {
		b.arena = make([]byte, 0, max(need, min(2*cap(b.arena), b.maxBytes)))
	}
	for i := b.owned; i < len(b.logs); i++ {
		p := b.logs[i].Payload
		start := len(b.arena)
		b.arena = append(b.arena, p...)
		b.logs[i].Payload = b.arena[start:len(b.arena):len(b.arena)]
	}
	b.owned, b.moved = len(b.logs), true
}

// cut keeps the records below seq and reports whether any is left.
func (b *sinkBatch) cut(seq uint64) bool {
	n := 0
	for n < len(b.logs) && b.logs[n].Seq < seq {
		n++
	}
	for _, lr := range b.logs[n:] {
		b.bytes -= len(lr.Payload)
	}
	clear(b.logs[n:])
	b.logs, b.owned = b.logs[:n], min(b.owned, n)
	return n > 0
}

// decode decodes the records read into recs, and their payload sizes into
// sizes, reusing what earlier batches left there (clean). It returns the
// payloads that did not decode as dead letters of component, each with its
// sequence: such a payload can only come from damage that slipped past the
// CRC, or from a newer agent's format.
func (b *sinkBatch) decode(component string) []agent.Dead {
	var bad []agent.Dead
	a := agent.NewStringArena(b.bytes)
	for _, lr := range b.logs {
		if cap(b.recs) > len(b.recs) {
			b.recs = b.recs[:len(b.recs)+1]
		} else {
			b.recs = append(b.recs, agent.Record{})
		}
		r := &b.recs[len(b.recs)-1]
		*r = agent.Record{Fields: r.Fields[:0], Raw: r.Raw[:0]}
		if _, err := r.UnmarshalShared(lr.Payload, a); err != nil {
			bad = append(bad, agent.Dead{Record: agent.Record{Raw: append([]byte(nil), lr.Payload...)}, Component: component, Err: fmt.Errorf("log record %d: %w", lr.Seq, err)})
			b.recs = b.recs[:len(b.recs)-1]
			continue
		}
		r.Seq = lr.Seq
		b.sizes = append(b.sizes, len(lr.Payload))
	}
	return bad
}

// keepRaw is the largest raw payload buffer a delivered record keeps for
// the next batch in any case; a larger one only if this batch used at least
// half of it.
const keepRaw = 4 << 10

// clean lets go of what the batch just delivered held: the records' strings
// (cut from the batch's string arena: one left behind keeps the whole
// arena) and the raw payload buffers this batch did not fill (see keepRaw),
// so that a burst of large records does not stay behind in buffers that
// later batches of small ones reuse. The records' field slices stay. What a
// sink holds between the log and its Write is then about twice a batch:
// batch.max_bytes of decoded records (plus one record), and, while a backlog
// drains in batches of several Reads, at most batch.max_bytes of payloads in
// the batch's arena.
func (b *sinkBatch) clean() {
	for i := range b.recs {
		r := &b.recs[i]
		clear(r.Fields)
		raw := r.Raw[:0]
		if c := cap(raw); c > keepRaw && c > 2*len(r.Raw) {
			raw = nil
		}
		*r = agent.Record{Fields: r.Fields[:0], Raw: raw}
	}
}

// payloadBytes returns the payload bytes of the first n decoded records:
// what pspf_sink_bytes_total counts, the same measure as
// drain.bytes_per_second.
func (b *sinkBatch) payloadBytes(n int) int {
	t := 0
	for _, sz := range b.sizes[:min(n, len(b.sizes))] {
		t += sz
	}
	return t
}

// assignIDs gives every record of recs that has no ID its stable ID,
// "<pipeline>:<seq>". The IDs are slices of one string made for the whole
// batch: one allocation per batch rather than one per record. A sink that
// keeps an ID past Write keeps that string alive, which is why sinks copy
// what they keep.
func assignIDs(pipeline string, recs []agent.Record) {
	var num [20]byte
	n := 0
	for i := range recs {
		if recs[i].ID == "" {
			n += len(pipeline) + 1 + len(strconv.AppendUint(num[:0], recs[i].Seq, 10))
		}
	}
	if n == 0 {
		return
	}
	var b strings.Builder
	b.Grow(n)
	for i := range recs {
		if recs[i].ID == "" {
			b.WriteString(pipeline)
			b.WriteByte(':')
			b.Write(strconv.AppendUint(num[:0], recs[i].Seq, 10))
		}
	}
	all, off := b.String(), 0
	for i := range recs {
		if recs[i].ID == "" {
			end := off + len(pipeline) + 1 + len(strconv.AppendUint(num[:0], recs[i].Seq, 10))
			recs[i].ID = all[off:end]
			off = end
		}
	}
}
