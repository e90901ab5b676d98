package runner

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/state"
)

// Partition-scoped state. When the pipeline's only source is a
// partitioned one (agent.PartitionedSource: a Kafka source in a consumer
// group), the stage keeps the stateful operators' state per input
// partition and is the source's agent.PartitionOwner:
//
//   - every partition this agent owns has its own chain of stateful
//     operators over tables of its own (opTable + ".p." + topic and
//     partition), and a table "part.<topic>.<partition>" that holds the
//     offset of the next record its state has not taken in; both are
//     checkpointed together, with the rest of the store;
//   - Assigned builds the partition's chain, which restores its state from
//     its tables (with the kafka store, after reading the changelog's tail
//     into them), and returns that offset: the source resumes there;
//   - a record is routed by its topic and partition fields to its
//     partition's chain; a record of a partition not owned (still in the
//     log from before a rebalance or a restart) is not applied: whoever
//     owns it reads it again from Kafka; nor is a record below the
//     partition's offset (read again after a rebalance or a restart: its
//     state has it already);
//   - Revoked waits until the stage has processed the log as far as it
//     reached when the revoke came (the partition's records handed over
//     are durable in it by then), checkpoints, and drops the chain;
//   - the offsets the source commits are those of the last checkpoint
//     (Committable), never beyond what the state has saved.
//
// Window outputs carry stable IDs (pipeline, operator, key, window start),
// and each partition's chain sees that partition's records in offset
// order whichever agent runs it, so the outputs do not depend on how the
// partitions are spread.

// partStage is the stage's state for partition-scoped state.
type partStage struct {
	src                     agent.PartitionedSource
	topicF, partF, offsetF  string
	chains                  map[agent.TopicPartition]*partChain // owned partitions; under the stage's mu
	captured                map[agent.TopicPartition]int64      // by the capture of the checkpoint in progress; under mu, with ckMu
	cmu                     sync.Mutex
	committable             map[agent.TopicPartition]int64 // as of the last committed checkpoint; under cmu
	sub                     agent.Batch
	warned                  bool // a record without the partition fields was logged
	notOwned, replayed, bad *agent.Counter
	owned                   *agent.Counter
	nOwned                  atomic.Int64 // len(chains), for the gauge

	// counters are the operators' counters, shared by every partition's
	// instances, for status.
	counters []statefulOp

	// cl is the changelog of the kafka store; nil with the others.
	cl                           agent.Changelog
	restoring                    map[agent.TopicPartition]*RestoreStatus // restores running; under cmu
	appended, restored, clErrors *agent.Counter

	// Exactly-once (stateful_eos.go): nil txn without it.
	txn                         agent.Transactor
	sink                        agent.TxnSink
	cur                         *partChain    // the chain whose outputs are being emitted; under mu
	held                        atomic.Int64  // bytes of the outputs held by every chain
	early                       chan struct{} // capacity 1: held passed maxHeldBytes
	txns, txnAborts, txnOutputs *agent.Counter
}

// partChain is one owned partition's chain and position.
type partChain struct {
	tp    agent.TopicPartition
	tag   string
	ops   []statefulOp
	meta  state.Table // partMetaTable: partNextKey
	next  int64       // offset of the next record to take in; -1: none yet
	saved int64       // next as written to meta
	idx   []int       // the records of the batch being routed
	// With the kafka store: the tables by name, and the keys changed
	// since the last checkpoint by table, which it appends to the
	// changelog.
	tables map[string]state.Table
	dirty  map[string]map[string]struct{}
	// With exactly-once: the outputs held for the next transaction, and
	// their bytes.
	out      []agent.TxnRecord
	outBytes int
}

// partNextKey is the key of a partition's next offset in its meta table.
var partNextKey = []byte("next")

// partitioned makes the stage partition-scoped when the pipeline's only
// source is a partitioned one whose records carry their partition. The
// kafka store needs that, and a source that offers a changelog.
func (s *statefulStage) partitioned() error {
	store := s.p.spec.State.Store
	var src agent.PartitionedSource
	var t, p, o string
	ok := len(s.p.sources) == 1
	if ok {
		src, ok = s.p.sources[0].src.(agent.PartitionedSource)
	}
	if ok {
		t, p, o, ok = src.PartitionFields()
	}
	if !ok {
		if store == StoreKafka {
			return errors.New("state store kafka: the pipeline's only source must be a kafka source in a group (topics), with metadata: true")
		}
		return nil
	}
	m := s.p.deps.Metrics
	name := s.p.spec.Name
	s.pt = &partStage{
		src: src, topicF: t, partF: p, offsetF: o,
		chains:      map[agent.TopicPartition]*partChain{},
		committable: map[agent.TopicPartition]int64{},
		restoring:   map[agent.TopicPartition]*RestoreStatus{},
		notOwned:    m.Counter("pspf_state_partition_records_skipped_total", "pipeline", name, "reason", "not_owned"),
		replayed:    m.Counter("pspf_state_partition_records_skipped_total", "pipeline", name, "reason", "taken_in"),
		bad:         m.Counter("pspf_state_partition_records_skipped_total", "pipeline", name, "reason", "no_partition"),
		owned:       m.Counter("pspf_state_partition_assignments_total", "pipeline", name),
		appended:    m.Counter("pspf_state_changelog_records_total", "pipeline", name, "op", "appended"),
		restored:    m.Counter("pspf_state_changelog_records_total", "pipeline", name, "op", "restored"),
		clErrors:    m.Counter("pspf_state_changelog_errors_total", "pipeline", name),
	}
	for _, c := range s.specs {
		s.pt.counters = append(s.pt.counters, statefulOp{opRun: newOpRun(c.Name, nil, s.env(c))})
	}
	m.Gauge("pspf_state_partitions", func() float64 { return float64(s.pt.nOwned.Load()) }, "pipeline", name)
	if store == StoreKafka {
		cs, ok := src.(agent.ChangelogSource)
		if !ok {
			return errors.New("state store kafka: the source keeps no changelog")
		}
		cl, err := cs.Changelog(s.p.spec.State.Changelog)
		if err != nil {
			return fmt.Errorf("state store kafka: %w", err)
		}
		s.pt.cl = cl
	}
	src.SetPartitionOwner(s)
	return nil
}

// partitionTag names a partition in table names: topic and partition, or
// a hash of them where that would make a name too long.
func partitionTag(t agent.TopicPartition) string {
	return t.Topic + "." + strconv.Itoa(int(t.Partition))
}

// partTable is the table of an operator's state for one partition.
func partTable(table, tag string) string {
	if n := table + ".p." + tag; len(n) <= state.MaxTableNameLen {
		return n
	}
	sum := sha256.Sum256([]byte(tag))
	return table + ".h." + hex.EncodeToString(sum[:8])
}

// partMetaTable is the table of a partition's position.
func partMetaTable(tag string) string {
	if n := "part." + tag; len(n) <= state.MaxTableNameLen {
		return n
	}
	sum := sha256.Sum256([]byte(tag))
	return "part.h." + hex.EncodeToString(sum[:8])
}

// keepPartTable reports whether t is a partition's table of one of the
// operators of specs, or a partition's position: kept by carryOver.
func keepPartTable(t string, specs []ComponentSpec) bool {
	if strings.HasPrefix(t, "part.") {
		return true
	}
	for _, c := range specs {
		o := opTable(c)
		if strings.HasPrefix(t, o+".p.") || strings.HasPrefix(t, o+".h.") {
			return true
		}
	}
	return false
}

// Assigned builds the chains of parts over their tables, which restores
// their state (with the kafka store, after the changelog's tail is read
// into the tables), and returns their offsets (agent.PartitionOwner). A
// partition still owned (the source restarted its client) keeps its
// chain and resumes where it is. The stage goes on with its other
// partitions meanwhile.
func (s *statefulStage) Assigned(ctx context.Context, parts []agent.TopicPartition) (map[agent.TopicPartition]int64, error) {
	if s.stopped.Load() {
		return nil, errors.New("stateful stage stopped")
	}
	out := map[agent.TopicPartition]int64{}
	for _, t := range parts {
		s.mu.Lock()
		pc := s.pt.chains[t]
		s.mu.Unlock()
		if pc == nil {
			var err error
			if pc, err = s.openPart(ctx, t); err != nil {
				return nil, fmt.Errorf("partition %s[%d]: %w", t.Topic, t.Partition, err)
			}
			s.mu.Lock()
			s.pt.chains[t] = pc
			s.pt.nOwned.Store(int64(len(s.pt.chains)))
			s.mu.Unlock()
			s.pt.owned.Inc()
		}
		out[t] = pc.next // -1 without state: rebuilt from the first record
	}
	s.log.Info("partitions assigned: state restored", "partitions", len(parts), "resume_at", fmtOffsets(out))
	return out, nil
}

// openPart restores a partition's state (the changelog's tail, with the
// kafka store) and position and builds its chain.
func (s *statefulStage) openPart(ctx context.Context, t agent.TopicPartition) (*partChain, error) {
	tag := partitionTag(t)
	meta, err := s.db.Table(partMetaTable(tag), 0)
	if err != nil {
		return nil, fmt.Errorf("position table: %w", err)
	}
	pc := &partChain{tp: t, tag: tag, meta: meta, next: -1, saved: -1}
	if s.pt.cl != nil {
		pc.tables = map[string]state.Table{meta.Name(): meta}
		pc.dirty = map[string]map[string]struct{}{}
		// A first build opens the operators' tables, with their TTLs, so
		// that the changelog's records can go into them.
		if _, err := s.buildOps(tag, pc.logged); err != nil {
			return nil, err
		}
		if err := s.restore(ctx, pc); err != nil {
			return nil, err
		}
		clear(pc.dirty) // the first build's writes, if any, are the restored state's
	}
	v, ok, err := meta.Get(partNextKey, nil)
	if err != nil {
		return nil, fmt.Errorf("read position: %w", err)
	}
	if ok {
		n, k := binary.Varint(v)
		if k <= 0 {
			return nil, fmt.Errorf("read position: %w", errBadPosition)
		}
		pc.next, pc.saved = n, n
	}
	var wrap func(state.Table) agent.StateTable
	if s.pt.cl != nil {
		wrap = pc.logged
	}
	if pc.ops, err = s.buildOps(tag, wrap); err != nil {
		return nil, err
	}
	return pc, nil
}

var errBadPosition = errors.New("damaged partition position")

// Revoked lets parts go (agent.PartitionOwner): unless lost, once the
// stage has processed the log as far as it reached now, and a checkpoint
// has saved their state. It returns their checkpointed offsets.
func (s *statefulStage) Revoked(ctx context.Context, parts []agent.TopicPartition, lost bool) map[agent.TopicPartition]int64 {
	if !lost {
		target := s.p.plog.NextSeq()
		if !s.waitProcessed(ctx, target) {
			s.log.Warn("partitions revoked before the stage took in all their records; their next owner reads those again",
				"partitions", len(parts), "log_next", s.nextPub.Load(), "target", target)
		}
		if err := s.checkpoint(ctx); err != nil {
			s.log.Warn("checkpoint for revoked partitions failed; their next owner starts at the previous one", "err", err)
		}
	}
	s.mu.Lock()
	var gone []*partChain
	for _, t := range parts {
		if pc := s.pt.chains[t]; pc != nil {
			gone = append(gone, pc)
		}
		delete(s.pt.chains, t)
	}
	s.pt.nOwned.Store(int64(len(s.pt.chains)))
	dropped := s.pt.txn != nil && s.dropUncommitted(gone)
	s.mu.Unlock()
	if dropped {
		if err := s.checkpoint(context.WithoutCancel(ctx)); err != nil {
			s.log.Warn("exactly-once: checkpoint after dropping the state of partitions let go failed", "err", err)
		}
	}
	s.pt.cmu.Lock()
	defer s.pt.cmu.Unlock()
	out := map[agent.TopicPartition]int64{}
	for _, t := range parts {
		// With exactly-once the offsets were committed in the
		// transactions: the source commits none.
		if off, ok := s.pt.committable[t]; ok && s.pt.txn == nil {
			out[t] = off
		}
		delete(s.pt.committable, t)
	}
	what := "partitions revoked: state checkpointed and let go"
	if lost {
		what = "partitions lost: state let go without a checkpoint"
	}
	s.log.Info(what, "partitions", len(parts), "committed", fmtOffsets(out))
	return out
}

// waitProcessed waits until the stage has processed the pipeline log up
// to (not including) seq, or ctx ends, or the stage fails.
func (s *statefulStage) waitProcessed(ctx context.Context, seq uint64) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if s.nextPub.Load() >= seq {
			return true
		}
		if s.stopped.Load() {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Committable returns the checkpointed offsets of the owned partitions
// (agent.PartitionOwner).
func (s *statefulStage) Committable() map[agent.TopicPartition]int64 {
	if s.pt.txn != nil {
		return nil // committed in the transactions (stateful_eos.go)
	}
	s.pt.cmu.Lock()
	defer s.pt.cmu.Unlock()
	out := make(map[agent.TopicPartition]int64, len(s.pt.committable))
	for t, off := range s.pt.committable {
		out[t] = off
	}
	return out
}

// stepParts routes a decoded batch to the chains of its records'
// partitions and runs each; b keeps only the dead letters. The caller
// holds mu.
func (s *statefulStage) stepParts(ctx context.Context, b *agent.Batch, mute bool) {
	pt := s.pt
	for i := range b.Records {
		r := &b.Records[i]
		t, off, ok := s.partitionOf(r)
		if !ok {
			pt.bad.Inc()
			if !pt.warned {
				pt.warned = true
				s.log.Warn("record without its partition fields (an operator before the log removed them?): sent to dead letters",
					"fields", []string{pt.topicF, pt.partF, pt.offsetF})
			}
			b.Reject(*r, "stateful", fmt.Errorf("stateful: record without the fields %s, %s, %s: its partition is unknown", pt.topicF, pt.partF, pt.offsetF))
			continue
		}
		pc := pt.chains[t]
		switch {
		case pc == nil:
			pt.notOwned.Inc()
		case off < pc.next:
			pt.replayed.Inc()
		default:
			pc.next = off + 1
			pc.idx = append(pc.idx, i)
		}
	}
	sub := &pt.sub
	for _, t := range s.ownedSorted() {
		pc := pt.chains[t]
		if len(pc.idx) == 0 {
			continue
		}
		sub.Reset()
		sub.Now = b.Now
		for _, i := range pc.idx {
			sub.Records = append(sub.Records, b.Records[i])
		}
		pc.idx = pc.idx[:0]
		s.chain(ctx, pc.ops, sub, 0)
		if s.damaged() {
			break
		}
		if mute {
			sub.Records, sub.Dead = sub.Records[:0], sub.Dead[:0]
		}
		pt.cur = pc
		s.emit(ctx, sub)
		pt.cur = nil
		// The copies share the batch's field slices: none may outlive it.
		clear(sub.Records[:cap(sub.Records)])
	}
	for _, pc := range pt.chains {
		pc.idx = pc.idx[:0]
	}
	b.Records = b.Records[:0]
}

// ownedSorted returns the owned partitions in order, so that the outputs
// of a batch come in the same order on every run.
func (s *statefulStage) ownedSorted() []agent.TopicPartition {
	ts := make([]agent.TopicPartition, 0, len(s.pt.chains))
	for t := range s.pt.chains {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].Topic != ts[j].Topic {
			return ts[i].Topic < ts[j].Topic
		}
		return ts[i].Partition < ts[j].Partition
	})
	return ts
}

// partitionOf reads a record's partition and offset from its fields.
func (s *statefulStage) partitionOf(r *agent.Record) (agent.TopicPartition, int64, bool) {
	var t agent.TopicPartition
	var off int64
	found := 0
	for i := range r.Fields {
		f := &r.Fields[i]
		switch f.Name {
		case s.pt.topicF:
			if f.Kind == agent.KindString {
				t.Topic = f.Str
				found |= 1
			}
		case s.pt.partF:
			if f.Kind == agent.KindInt {
				t.Partition = int32(f.Int)
				found |= 2
			}
		case s.pt.offsetF:
			if f.Kind == agent.KindInt {
				off = f.Int
				found |= 4
			}
		}
	}
	return t, off, found == 7
}

// eachChain calls fn with every chain of operators (the one chain, or
// every owned partition's, in order) until it returns false. The caller
// holds mu.
func (s *statefulStage) eachChain(fn func(ops []statefulOp) bool) {
	if s.pt == nil {
		fn(s.ops)
		return
	}
	defer func() { s.pt.cur = nil }()
	for _, t := range s.ownedSorted() {
		s.pt.cur = s.pt.chains[t]
		if !fn(s.pt.chains[t].ops) {
			return
		}
	}
}

// captureParts writes every owned partition's position to its table and
// notes the positions the checkpoint being captured holds. The caller
// holds mu (and ckMu).
func (s *statefulStage) captureParts(ctx context.Context) error {
	s.pt.captured = make(map[agent.TopicPartition]int64, len(s.pt.chains))
	var buf [binary.MaxVarintLen64]byte
	for t, pc := range s.pt.chains {
		if pc.next != pc.saved {
			n := binary.PutVarint(buf[:], pc.next)
			if err := pc.meta.Put(partNextKey, buf[:n]); err != nil {
				return fmt.Errorf("partition %s[%d]: write position: %w", t.Topic, t.Partition, err)
			}
			if pc.dirty != nil {
				pc.touch(pc.meta.Name(), partNextKey)
			}
			pc.saved = pc.next
		}
		if s.pt.cl != nil && s.pt.txn == nil {
			if err := s.appendChanges(ctx, pc); err != nil {
				return fmt.Errorf("partition %s[%d]: %w", t.Topic, t.Partition, err)
			}
		}
		if pc.next >= 0 {
			s.pt.captured[t] = pc.next
		}
	}
	if s.pt.txn != nil {
		return s.commitTxn(ctx)
	}
	return nil
}

// publishParts makes the positions of the checkpoint just committed the
// committable ones. The caller holds ckMu.
func (s *statefulStage) publishParts() {
	if s.pt == nil || s.pt.captured == nil {
		return
	}
	s.mu.Lock()
	owned := make(map[agent.TopicPartition]bool, len(s.pt.chains))
	for t := range s.pt.chains {
		owned[t] = true
	}
	s.mu.Unlock()
	s.pt.cmu.Lock()
	defer s.pt.cmu.Unlock()
	for t, off := range s.pt.captured {
		if owned[t] {
			s.pt.committable[t] = off
		}
	}
	s.pt.captured = nil
}

// fmtOffsets formats offsets by partition for a log line.
func fmtOffsets(m map[agent.TopicPartition]int64) string {
	ts := make([]agent.TopicPartition, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].Topic != ts[j].Topic {
			return ts[i].Topic < ts[j].Topic
		}
		return ts[i].Partition < ts[j].Partition
	})
	var b strings.Builder
	for i, t := range ts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s[%d]=%d", t.Topic, t.Partition, m[t])
	}
	return b.String()
}

// partitionsStatus returns the membership and the partitions owned, for
// status; it does not wait for the stage.
func (s *statefulStage) partitionsStatus() *PartitionsStatus {
	g := s.pt.src.GroupStatus()
	st := &PartitionsStatus{Group: g.Group, MemberID: g.MemberID, Generation: g.Generation, Owned: []OwnedPartition{}}
	s.pt.cmu.Lock()
	for _, pl := range g.Partitions {
		off, ok := s.pt.committable[agent.TopicPartition{Topic: pl.Topic, Partition: pl.Partition}]
		if !ok {
			off = -1
		}
		st.Owned = append(st.Owned, OwnedPartition{Topic: pl.Topic, Partition: pl.Partition, Lag: pl.Lag, Checkpointed: off})
		st.Lag += pl.Lag
	}
	s.pt.cmu.Unlock()
	st.Restoring = s.Restoring()
	return st
}
