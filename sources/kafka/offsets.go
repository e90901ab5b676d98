package kafka

import "sync"

// tp names a partition.
type tp struct {
	topic     string
	partition int32
}

// partState is what the source knows of a partition it consumes: the spans
// of offsets it handed to the pipeline that are not durable yet, in offset
// order, and the offset below which every record is durable in the
// pipeline log (or was deliberately dropped). Only that offset is ever
// committed, so a crash or a rebalance replays, never skips.
//
// The ack of a batch may come after the acks of later batches (a batch
// whose records the operators all filtered is acked at once, while an
// earlier one still waits for the fsync): durable moves only over the
// prefix of spans that are all done.
type partState struct {
	tp
	spans     []*span // handed out, not yet folded into durable
	durable   int64   // every offset below it is durable; -1: nothing yet
	epoch     int32   // leader epoch of the record at durable-1
	committed int64   // the offset last committed; -1: none by this source
	stuck     bool    // a span was nacked: durable stays put until the client restarts
	gone      bool    // revoked or lost, or the client was restarted: its acks no longer count
	member    string  // the group member id it was assigned under (stale.go)
}

func newPartState(t tp, committed int64) *partState {
	return &partState{tp: t, durable: -1, epoch: -1, committed: committed}
}

// span is the offsets of one partition that one batch covers: its records
// and the records of that partition it dropped (oversize).
type span struct {
	ps     *partState
	end    int64 // offset after the span's last record
	epoch  int32 // leader epoch of that record
	done   bool  // acked
	nacked bool  // acked with an error: the records must come again
}

// add appends sp to the partition's spans.
func (ps *partState) add(sp *span) { ps.spans = append(ps.spans, sp) }

// advance folds the done spans at the front into durable and reports
// whether durable moved. A nacked span stops it for good: the records from
// there on are read again after the client restarts.
func (ps *partState) advance() bool {
	moved := false
	for len(ps.spans) > 0 && ps.spans[0].done && !ps.stuck {
		sp := ps.spans[0]
		if sp.nacked {
			ps.stuck = true
			break
		}
		ps.durable, ps.epoch = sp.end, sp.epoch
		ps.spans[0] = nil
		ps.spans = ps.spans[1:]
		moved = true
	}
	if len(ps.spans) == 0 {
		ps.spans = nil // let the backing array go
	}
	return moved
}

// waiting reports whether some of the partition's records handed out may
// still become durable: a revoke waits for them before it commits.
func (ps *partState) waiting() bool { return len(ps.spans) > 0 && !ps.stuck }

// toCommit reports the offset to commit, if it is past the last commit.
func (ps *partState) toCommit() (int64, bool) {
	return ps.durable, ps.durable >= 0 && ps.durable > ps.committed
}

// flight is one batch between Read and its ack.
type flight struct {
	spans []span // one per partition of the batch
	bytes int64  // counted against max_in_flight_bytes
	n     int    // records handed over
	bb    *batchBufs
	once  sync.Once
}

// spanOf returns the index of the batch's span of partition ps, adding
// one. A batch holds a few partitions: a linear search beats a map. The
// spans are registered with their partitions (pointers into f.spans) only
// once the batch is complete.
func (f *flight) spanOf(ps *partState) int {
	for i := range f.spans {
		if f.spans[i].ps == ps {
			return i
		}
	}
	f.spans = append(f.spans, span{ps: ps})
	return len(f.spans) - 1
}
