package runner

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// scribbleReader is a LogReader that holds its own side of the contract
// "payloads are valid until the next Read" to the letter: every Read first
// overwrites the payload buffer the previous one handed out, then fills it
// again, and it writes its records into buf[:0] like buffer.Reader. It
// returns at most per records a Read.
type scribbleReader struct {
	payloads [][]byte // the log: sequence i+1 has payloads[i]
	next     int      // index of the next record to read
	per      int
	buf      []byte
	reads    int
}

func (r *scribbleReader) Read(ctx context.Context, buf []LogRecord, maxBytes int) ([]LogRecord, error) {
	r.reads++
	full := r.buf[:cap(r.buf)]
	for i := range full {
		full[i] = 0xEE
	}
	r.buf = r.buf[:0]
	out := buf[:0]
	for r.next < len(r.payloads) && len(out) < min(cap(buf), r.per) {
		p := r.payloads[r.next]
		if len(out) > 0 && maxBytes > 0 && len(r.buf)+len(p) > maxBytes {
			break
		}
		if len(r.buf)+len(p) > cap(r.buf) {
			return nil, fmt.Errorf("scribble reader: buffer of %d bytes too small", cap(r.buf))
		}
		start := len(r.buf)
		r.buf = append(r.buf, p...)
		out = append(out, LogRecord{Seq: uint64(r.next + 1), Payload: r.buf[start:len(r.buf)]})
		r.next++
	}
	if len(out) == 0 {
		return nil, ctx.Err()
	}
	return out, nil
}

func (r *scribbleReader) Ack(uint64) error { return nil }

// TestSinkBatchTopUpKeepsEarlierReads fills one batch from several Reads
// of a reader that overwrites what it handed out before: every record of
// every Read, its sequence and its payload, must still be what was read
// once the batch is full, and decode to the record written.
func TestSinkBatchTopUpKeepsEarlierReads(t *testing.T) {
	const n = 40
	want := make([]agent.Record, n)
	log := &scribbleReader{per: 7, buf: make([]byte, 0, 64<<10)}
	for i := range want {
		want[i] = agent.Record{Key: fmt.Sprintf("key-%d", i), Raw: bytes.Repeat([]byte{byte('a' + i%26)}, 10+i*13)}
		p, err := want[i].MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		log.payloads = append(log.payloads, p)
	}
	b := newSinkBatch(n, 1<<20)
	for round := range 2 { // the second round reuses the first one's buffers
		log.next = 0
		b.reset()
		for b.len() < n {
			added, err := b.read(context.Background(), log, n-b.len(), 1<<20)
			if err != nil || added == 0 {
				t.Fatalf("round %d: read added %d records (%v) with %d of %d held", round, added, err, b.len(), n)
			}
		}
		if log.reads < 2*(round+1) {
			t.Fatalf("round %d: %d reads, want several per batch", round, log.reads)
		}
		for i, lr := range b.logs {
			if lr.Seq != uint64(i+1) || !bytes.Equal(lr.Payload, log.payloads[i]) {
				t.Fatalf("round %d: record %d: got sequence %d, payload %.20q; want %d, %.20q", round, i, lr.Seq, lr.Payload, i+1, log.payloads[i])
			}
		}
		if bad := b.decode("sink"); len(bad) > 0 {
			t.Fatalf("round %d: %d records did not decode, first: %v", round, len(bad), bad[0].Err)
		}
		for i, r := range b.recs {
			if r.Key != want[i].Key || !bytes.Equal(r.Raw, want[i].Raw) || r.Seq != uint64(i+1) {
				t.Fatalf("round %d: record %d: got key %q, %d raw bytes, sequence %d; want %q, %d, %d", round, i, r.Key, len(r.Raw), r.Seq, want[i].Key, len(want[i].Raw), i+1)
			}
		}
		b.clean()
	}
}

// TestSinkBatchCut keeps the records below a sequence, with their bytes.
func TestSinkBatchCut(t *testing.T) {
	log := &scribbleReader{per: 10, buf: make([]byte, 0, 1024), payloads: [][]byte{[]byte("a"), []byte("bb"), []byte("ccc")}}
	b := newSinkBatch(10, 1024)
	if _, err := b.read(context.Background(), log, 10, 1024); err != nil {
		t.Fatal(err)
	}
	if !b.cut(3) || b.len() != 2 || b.bytes != 3 || b.last() != 2 {
		t.Fatalf("cut(3): got %d records, %d bytes, last %d; want 2, 3, 2", b.len(), b.bytes, b.last())
	}
	if b.cut(1) || b.len() != 0 || b.bytes != 0 {
		t.Fatalf("cut(1): got %d records, %d bytes; want none", b.len(), b.bytes)
	}
}
