package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
)

// Exactly-once across the group (agent.TxnSource). Each checkpoint of the
// pipeline is one transaction of a transactional producer of its own (the
// Kafka sink's transactional id): the changelog records, the window
// outputs and the input offsets, the last committed to the group with the
// member's id and generation (KIP-447), so that the commit of a member the
// group has moved on from is refused and its transaction aborted. The
// consumer reads with read_committed and fetches the group's offsets with
// require_stable: an assignment waits until a transaction of the previous
// owner that holds offsets is committed or aborted, and only then is the
// state restored from the changelog (to its last stable offset).

var _ agent.TxnSource = (*Source)(nil)

// Brokers returns the source's seed brokers.
func (s *Source) Brokers() []string { return s.cfg.Brokers }

// Transactions returns the transactor of exactly-once over the changelog
// cl, with the sink's target t. Called before Connect.
func (s *Source) Transactions(cl agent.Changelog, t agent.TxnTarget) (agent.Transactor, error) {
	c, ok := cl.(*changelog)
	if !ok || c.s != s {
		return nil, errors.New("kafka source: transactions need the source's own changelog")
	}
	if s.direct {
		return nil, errors.New("kafka source: exactly_once needs a group member (topics, not partitions)")
	}
	if s.cfg.Isolation != "read_committed" {
		return nil, fmt.Errorf("kafka source: exactly_once needs isolation: read_committed, got %q", s.cfg.Isolation)
	}
	if t.TransactionalID == "" {
		return nil, errors.New("kafka source: exactly_once: empty transactional id")
	}
	s.eos = true
	return &transactor{s: s, cl: c, target: t}, nil
}

// transactor is agent.Transactor on a transactional producer.
type transactor struct {
	s      *Source
	cl     *changelog
	target agent.TxnTarget

	mu   sync.Mutex
	prod *kgo.Client         // made by the first Commit; dropped after an unknown outcome
	ids  map[string][16]byte // the input topics' IDs, which TxnOffsetCommit v6+ names them by
}

// producer returns the transactional producer, made (and the changelog
// topic checked) on first use. The caller holds mu.
func (t *transactor) producer(ctx context.Context) (*kgo.Client, error) {
	if t.prod != nil {
		return t.prod, nil
	}
	opts, err := t.s.connOpts("-txn")
	if err != nil {
		return nil, agent.Permanent(fmt.Errorf("kafka source: transactions: %w", err))
	}
	changelogTopic := t.cl.topic
	var outputs kgo.Partitioner = kgo.StickyKeyPartitioner(nil)
	if t.target.RoundRobin {
		outputs = kgo.RoundRobinPartitioner()
	}
	opts = append(opts,
		kgo.TransactionalID(t.target.TransactionalID),
		// A transaction lasts one checkpoint's produce and commit: a
		// member killed with one open holds up the next owner's restore
		// for at most this long (a restart of the same agent aborts it
		// at once).
		kgo.TransactionTimeout(2*t.s.cfg.SessionTimeout),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(&txnPartitioner{changelog: changelogTopic, outputs: outputs}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, agent.Permanent(fmt.Errorf("kafka source: transactions: %w", err))
	}
	// Fences an earlier instance with the same id, which aborts its
	// open transaction.
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka source: transactions: init producer: %w", err)
	}
	t.s.log.Info("kafka source: transactional producer ready; an earlier one with the same id is fenced",
		"transactional_id", t.target.TransactionalID, "producer_id", id, "producer_epoch", epoch)
	c := t.cl
	c.mu.Lock()
	err = c.ensure(ctx, cl)
	c.mu.Unlock()
	if err != nil {
		cl.Close()
		return nil, err
	}
	t.prod = cl
	return cl, nil
}

// Commit runs tx in one transaction (agent.Transactor).
func (t *transactor) Commit(ctx context.Context, tx *agent.Txn) (map[int32]int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cl, err := t.producer(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", agent.ErrTxnAborted, err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.drop()
		return nil, fmt.Errorf("kafka source: begin transaction: %w: %w", agent.ErrTxnAborted, err)
	}
	var (
		emu   sync.Mutex
		perr  error
		nexts = map[int32]int64{}
	)
	promise := func(r *kgo.Record, err error) {
		emu.Lock()
		defer emu.Unlock()
		if err != nil {
			if perr == nil {
				perr = fmt.Errorf("produce to %s[%d]: %w", r.Topic, r.Partition, err)
			}
			return
		}
		if r.Topic == t.cl.topic {
			nexts[r.Partition] = max(nexts[r.Partition], r.Offset+1)
		}
	}
	parts := make([]int32, 0, len(tx.Changes))
	for p := range tx.Changes {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		for _, c := range tx.Changes[p] {
			cl.Produce(ctx, &kgo.Record{Topic: t.cl.topic, Partition: p, Key: c.Key, Value: c.Value}, promise)
		}
	}
	for i := range tx.Outputs {
		o := &tx.Outputs[i]
		kr := &kgo.Record{Topic: o.Topic, Key: o.Key, Value: o.Value, Timestamp: o.Time}
		for _, h := range o.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		cl.Produce(ctx, kr, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		t.abort(ctx, cl)
		return nil, fmt.Errorf("kafka source: transaction: flush: %w: %w", agent.ErrTxnAborted, err)
	}
	if perr != nil {
		t.abort(ctx, cl)
		return nil, fmt.Errorf("kafka source: transaction: %w: %w", agent.ErrTxnAborted, perr)
	}
	var member string
	gen := int32(-1)
	if len(tx.Offsets) > 0 {
		var err error
		if member, gen, err = t.commitOffsets(ctx, cl, tx.Offsets); err != nil {
			t.abort(ctx, cl)
			return nil, fmt.Errorf("kafka source: transaction: %w: %w", agent.ErrTxnAborted, err)
		}
	}
	// The producer's id and epoch as its records carry them, for the
	// log line: EndTxn may bump the epoch (KIP-890).
	debug := t.s.log.Enabled(ctx, slog.LevelDebug)
	var (
		id    int64
		epoch int16
	)
	if debug {
		id, epoch, _ = cl.ProducerID(ctx)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		// The outcome is unknown: the next producer fences this one,
		// which aborts the transaction if it is still open.
		t.drop()
		return nil, fmt.Errorf("kafka source: commit transaction: %w", err)
	}
	if debug {
		t.s.log.Debug("kafka source: transaction committed", "producer_id", id, "producer_epoch", epoch,
			"member", member, "generation", gen, "offsets", fmtTxnOffsets(tx.Offsets), "outputs", len(tx.Outputs), "changelog", nexts)
	}
	return nexts, nil
}

// commitOffsets adds the group's offsets to the open transaction, as the
// member in its current generation.
// It returns the member id and generation it committed as.
func (t *transactor) commitOffsets(ctx context.Context, cl *kgo.Client, offsets map[agent.TopicPartition]int64) (member string, gen int32, _ error) {
	cons := t.s.cl.Load()
	if cons == nil {
		return "", -1, errors.New("commit offsets: the consumer is not connected")
	}
	member, gen = t.s.membership(cons)
	if gen < 0 || member == "" {
		return member, gen, errors.New("commit offsets: not a member of the group (joining)")
	}
	if err := t.s.staleOffsets(offsets, member); err != nil {
		return member, gen, err
	}
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return member, gen, fmt.Errorf("commit offsets: producer id: %w", err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = t.target.TransactionalID, id, epoch, t.s.group
	aresp, err := add.RequestWith(ctx, cl)
	if err != nil {
		return member, gen, fmt.Errorf("add offsets to transaction: %w", err)
	}
	if err := kerr.ErrorForCode(aresp.ErrorCode); err != nil {
		return member, gen, fmt.Errorf("add offsets to transaction: %w", err)
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = t.target.TransactionalID, t.s.group, id, epoch
	req.Generation, req.MemberID = gen, member
	if t.s.cfg.StaticMembership {
		req.InstanceID = kmsg.StringPtr(t.s.instanceID)
	}
	byTopic := map[string][]kmsg.TxnOffsetCommitRequestTopicPartition{}
	for tp, off := range offsets {
		p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		p.Partition, p.Offset, p.LeaderEpoch = tp.Partition, off, -1
		byTopic[tp.Topic] = append(byTopic[tp.Topic], p)
	}
	for topic, ps := range byTopic {
		id, err := t.topicID(ctx, cl, topic)
		if err != nil {
			return member, gen, err
		}
		rt := kmsg.NewTxnOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID, rt.Partitions = topic, id, ps
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return member, gen, fmt.Errorf("commit offsets in transaction: %w", err)
	}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return member, gen, fmt.Errorf("commit offset of %s[%d] in transaction (generation %d): %w", rt.Topic, p.Partition, gen, err)
			}
		}
	}
	return member, gen, nil
}

// topicID returns the ID of an input topic, asked once. The caller holds
// mu.
func (t *transactor) topicID(ctx context.Context, cl *kgo.Client, topic string) ([16]byte, error) {
	if id, ok := t.ids[topic]; ok {
		return id, nil
	}
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return [16]byte{}, fmt.Errorf("metadata of %q: %w", topic, err)
	}
	for _, mt := range resp.Topics {
		if err := kerr.ErrorForCode(mt.ErrorCode); err != nil {
			return [16]byte{}, fmt.Errorf("metadata of %q: %w", topic, err)
		}
		if mt.Topic != nil && *mt.Topic == topic {
			if t.ids == nil {
				t.ids = map[string][16]byte{}
			}
			t.ids[topic] = mt.TopicID
			return mt.TopicID, nil
		}
	}
	return [16]byte{}, fmt.Errorf("metadata of %q: no answer for the topic", topic)
}

// abort ends the open transaction with an abort, bounded even when ctx
// has ended; a producer that cannot abort is dropped (the next one fences
// it).
func (t *transactor) abort(ctx context.Context, cl *kgo.Client) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.s.cfg.RequestTimeout)
	defer cancel()
	if err := cl.AbortBufferedRecords(actx); err != nil {
		t.drop()
		return
	}
	if err := cl.EndTransaction(actx, kgo.TryAbort); err != nil {
		t.drop()
	}
}

// drop closes the producer; the next Commit makes a new one. The caller
// holds mu.
func (t *transactor) drop() {
	if t.prod != nil {
		t.prod.Close()
		t.prod = nil
	}
}

// Close aborts a transaction left open and closes the producer.
func (t *transactor) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.prod != nil {
		t.abort(context.Background(), t.prod)
	}
	t.drop()
}

// txnPartitioner sends changelog records to the partition they name and
// outputs by the sink's partitioner.
type txnPartitioner struct {
	changelog string
	outputs   kgo.Partitioner
}

func (p *txnPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.changelog {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return p.outputs.ForTopic(topic)
}

var _ agent.TxnConfig = (*Config)(nil)

// TxnCluster returns the brokers, and ok for a group member with
// metadata (the partition fields).
func (c *Config) TxnCluster() ([]string, bool) { return c.Brokers, len(c.Topics) > 0 && c.Metadata }

// fmtTxnOffsets formats a transaction's offsets for a log line, in order.
func fmtTxnOffsets(offsets map[agent.TopicPartition]int64) string {
	parts := make([]string, 0, len(offsets))
	for t, off := range offsets {
		parts = append(parts, fmt.Sprintf("%s[%d]=%d", t.Topic, t.Partition, off))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
