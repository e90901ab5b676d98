package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
)

// txnState is the exactly-once side of the sink. Each Write is one Kafka
// transaction holding the batch's records and one record on the cursor
// topic, keyed agent/pipeline/sink, whose value is the log sequence of the
// batch's last record. Either both are visible to read_committed consumers
// or neither is, so the cursor read back from Kafka says exactly which log
// records Kafka holds.
type txnState struct {
	cursor uint64 // last log sequence committed to Kafka
	known  bool   // cursor is known; false after a commit of unknown outcome
	have   bool   // a cursor record was found or committed
}

var _ agent.CursorOwner = (*Sink)(nil)

// OwnsCursor reports whether the sink keeps its cursor in Kafka: with
// exactly_once only. Otherwise the runner treats it as an ordinary sink
// (live_first is possible, and so is a redrive through it).
func (s *Sink) OwnsCursor() bool { return s.eos != nil }

// Cursor returns the log sequence up to which Kafka holds every record of
// this sink, as loaded by Connect (ok is false when Kafka holds none). The
// runner skips the log up to it.
func (s *Sink) Cursor(ctx context.Context) (uint64, bool, error) {
	if s.eos == nil {
		return 0, false, nil
	}
	if !s.eos.known {
		cl, err := s.client(ctx, false)
		if err != nil {
			return 0, false, err
		}
		if err := s.eos.reload(ctx, s, cl); err != nil {
			return 0, false, err
		}
	}
	return s.eos.cursor, s.eos.have, nil
}

// connect fences an earlier producer with the same transactional id (which
// aborts its open transaction), makes sure the cursor topic exists and loads
// the cursor.
func (t *txnState) connect(ctx context.Context, s *Sink, cl *kgo.Client) error {
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("init transactional producer: %w", err)
	}
	if err := s.ensureCursorTopic(ctx, cl); err != nil {
		return err
	}
	return t.reload(ctx, s, cl)
}

func (t *txnState) reload(ctx context.Context, s *Sink, cl *kgo.Client) error {
	seq, ok, err := s.readCursor(ctx, cl)
	if err != nil {
		return fmt.Errorf("read cursor: %w", err)
	}
	t.cursor, t.have, t.known = seq, ok, true
	return nil
}

func (t *txnState) write(ctx context.Context, s *Sink, cl *kgo.Client, recs []agent.Record) error {
	if !t.known {
		if err := t.reload(ctx, s, cl); err != nil {
			return fmt.Errorf("kafka sink: %w", err)
		}
	}
	if t.have {
		skip := 0
		for skip < len(recs) && recs[skip].Seq <= t.cursor {
			skip++
		}
		if skip == len(recs) {
			return nil // committed before a crash or a commit of unknown outcome
		}
		if skip > 0 {
			return t.offset(t.write(ctx, s, cl, recs[skip:]), skip)
		}
	}
	rej, err := t.commit(ctx, s, cl, recs, nil)
	if err != nil || rej == nil {
		return err
	}
	// Some records were refused for good: the transaction was aborted, so
	// commit the others alone.
	if _, err := t.commit(ctx, s, cl, recs, rej); err != nil {
		return err
	}
	return rej
}

// offset shifts a RejectedError's indexes by n.
func (t *txnState) offset(err error, n int) error {
	var rej *agent.RejectedError
	if errors.As(err, &rej) {
		for i := range rej.Index {
			rej.Index[i] += n
		}
	}
	return err
}

// commit runs one transaction with recs except those in without. It returns
// the records Kafka refused for good (the transaction is then aborted), or
// an error to retry.
func (t *txnState) commit(ctx context.Context, s *Sink, cl *kgo.Client, recs []agent.Record, without *agent.RejectedError) (*agent.RejectedError, error) {
	if err := cl.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("kafka sink: begin transaction: %w", err)
	}
	rej := s.build(recs)
	if without != nil {
		keep := s.ptrs[:0]
		idx := s.index[:0]
		for j, p := range s.ptrs {
			if !contains(without.Index, s.index[j]) {
				keep = append(keep, p)
				idx = append(idx, s.index[j])
			}
		}
		s.ptrs, s.index = keep, idx
		rej = nil
	}
	last := recs[len(recs)-1].Seq
	cur := &kgo.Record{Topic: s.cfg.CursorTopic, Key: []byte(s.cursorID), Value: strconv.AppendUint(nil, last, 10)}
	s.ptrs = append(s.ptrs, cur)
	errs, err := s.send(ctx, cl, s.ptrs)
	if err != nil {
		t.known = false // the client was dropped: a new one fences and reloads
		return nil, err
	}
	s.ptrs = s.ptrs[:len(s.ptrs)-1]
	err = s.classify(errs[:len(errs)-1], rej)
	if err == nil && errs[len(errs)-1] != nil {
		err = fmt.Errorf("kafka sink: cursor topic %q: %w", s.cfg.CursorTopic, errs[len(errs)-1])
	}
	if err != nil {
		t.abort(ctx, s, cl)
		var r *agent.RejectedError
		if errors.As(err, &r) {
			return r, nil
		}
		return nil, err
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		// The commit may or may not have happened: read the cursor back
		// before the next transaction.
		t.known = false
		t.abort(ctx, s, cl)
		return nil, fmt.Errorf("kafka sink: commit transaction: %w", err)
	}
	t.cursor, t.have = last, true
	return nil, nil
}

// abort ends the open transaction, if any. It runs even when ctx is done
// (shutdown), bounded by request_timeout: a transaction left open is
// aborted by the broker's timeout or when the next instance fences it.
func (t *txnState) abort(ctx context.Context, s *Sink, cl *kgo.Client) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	_ = cl.AbortBufferedRecords(actx)
	_ = cl.EndTransaction(actx, kgo.TryAbort)
}

func (t *txnState) close(ctx context.Context, s *Sink, cl *kgo.Client) {
	t.abort(ctx, s, cl)
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// ensureCursorTopic creates the compacted cursor topic with one partition if
// it does not exist.
func (s *Sink) ensureCursorTopic(ctx context.Context, cl *kgo.Client) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = s.cfg.CursorTopic
	rt.NumPartitions = 1
	rt.ReplicationFactor = -1
	for k, v := range map[string]string{"cleanup.policy": "compact"} {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, c)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = int32(s.cfg.RequestTimeout.Milliseconds())
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("create cursor topic: %w", err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create cursor topic %q: %w", t.Topic, err)
		}
	}
	return nil
}

// readCursor reads the cursor topic with read_committed up to its last
// stable offsets and returns the last value under the sink's key.
func (s *Sink) readCursor(ctx context.Context, cl *kgo.Client) (uint64, bool, error) {
	ends, err := s.stableEnds(ctx, cl)
	if err != nil {
		return 0, false, err
	}
	parts := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end > 0 {
			parts[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(parts) == 0 {
		return 0, false, nil
	}
	opts := append(s.base[:len(s.base):len(s.base)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.cfg.CursorTopic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond))
	rc, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, false, err
	}
	defer rc.Close()
	var (
		seq   uint64
		found bool
		seen  = map[int32]int64{}
	)
	done := func() bool {
		for p, end := range ends {
			if end > 0 && seen[p] < end-1 {
				return false
			}
		}
		return true
	}
	for !done() {
		// Offsets below the end that never come are aborted records: a
		// quiet second after the last fetch means there is nothing more.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := rc.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return 0, false, ctx.Err()
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if r.Offset > seen[r.Partition] {
				seen[r.Partition] = r.Offset
			}
			if r.Attrs.IsControl() || string(r.Key) != s.cursorID {
				return
			}
			if v, err := strconv.ParseUint(string(r.Value), 10, 64); err == nil {
				seq, found = v, true
			}
		})
		for _, e := range fs.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
				return 0, false, e.Err
			}
		}
		if n == 0 {
			break
		}
	}
	return seq, found, nil
}

// stableEnds returns each cursor partition's last stable offset.
func (s *Sink) stableEnds(ctx context.Context, cl *kgo.Client) (map[int32]int64, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(s.cfg.CursorTopic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	if len(mresp.Topics) != 1 {
		return nil, fmt.Errorf("metadata of %q: %d topics", s.cfg.CursorTopic, len(mresp.Topics))
	}
	if err := kerr.ErrorForCode(mresp.Topics[0].ErrorCode); err != nil {
		return nil, fmt.Errorf("metadata of %q: %w", s.cfg.CursorTopic, err)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	req.IsolationLevel = 1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = s.cfg.CursorTopic
	for _, p := range mresp.Topics[0].Partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p.Partition
		rp.Timestamp = -1
		rp.CurrentLeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ends := map[int32]int64{}
	for _, shard := range cl.RequestSharded(ctx, req) {
		if shard.Err != nil {
			return nil, shard.Err
		}
		for _, t := range shard.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return nil, fmt.Errorf("list offsets of %q/%d: %w", t.Topic, p.Partition, err)
				}
				ends[p.Partition] = p.Offset
			}
		}
	}
	return ends, nil
}
