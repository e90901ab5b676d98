package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pspf/pspf-edge/agent"
)

// Exactly-once across a group of agents: `delivery: exactly_once` on the
// Kafka sink of a pipeline whose only source is a Kafka source in a group,
// with `state: {store: kafka}` (docs/distributed.md):
//
//   - the stateful stage does not append its outputs to the outbox: each
//     owned partition holds the outputs its chain emitted, encoded by the
//     sink (agent.TxnSink), until the next checkpoint;
//   - a checkpoint's capture is one transaction (agent.Transactor) with,
//     per partition, its changelog records (position last), its held
//     outputs and its position as the group's committed offset; state.db
//     commits only once the transaction has;
//   - a transaction aborted for sure keeps everything for the next
//     checkpoint (nothing of it is visible); one of unknown outcome fails
//     the stage: the pipeline starts again from state.db and the
//     changelog, which say what was committed;
//   - a partition let go with changes not committed (a revoke whose
//     checkpoint failed, a loss) has its tables in state.db dropped, so
//     that if it comes back its state is restored from the changelog
//     alone, not from a cache ahead of it.
//
// The held outputs are bounded in bytes by an early checkpoint when they
// pass maxHeldBytes: they cannot be dropped.

// maxHeldBytes is the size of the held outputs (topics, keys, values,
// headers) that makes a checkpoint come early.
const maxHeldBytes = 8 << 20

// exactlyOnce wires the pipeline's exactly-once sink into the stateful
// stage's transactions when the source is a Kafka source in a group, and
// refuses the configurations that cannot be exactly-once. Other pipelines
// keep the sink's own exactly-once (its cursor in its transactions).
func (p *Pipeline) exactlyOnce() error {
	var eos []*sinkRun
	for _, sr := range p.sinks {
		if ts, ok := sr.sink.(agent.TxnSink); ok {
			if _, on := ts.TxnTarget(); on {
				eos = append(eos, sr)
			}
		}
	}
	if len(eos) == 0 {
		return nil
	}
	var grouped []agent.PartitionedSource
	for _, sr := range p.sources {
		if ps, ok := sr.src.(agent.PartitionedSource); ok {
			if _, _, _, g := ps.PartitionFields(); g {
				grouped = append(grouped, ps)
			}
		}
	}
	if len(grouped) == 0 {
		return nil
	}
	name := "sink " + eos[0].name + ": delivery: exactly_once with a kafka source in a group"
	switch {
	case len(p.sources) != 1:
		return fmt.Errorf("%s: the kafka source must be the pipeline's only source", name)
	case p.stage == nil || p.stage.pt == nil:
		return fmt.Errorf("%s: needs stateful operators with state: {store: kafka, changelog: TOPIC}", name)
	case p.stage.pt.cl == nil:
		return fmt.Errorf("%s: needs state: {store: kafka, changelog: TOPIC}, got store %s", name, p.spec.State.Store)
	case len(p.sinks) != 1:
		return fmt.Errorf("%s: it must be the pipeline's only sink (its outputs are committed with the input offsets)", name)
	}
	src, ok := grouped[0].(agent.TxnSource)
	if !ok {
		return fmt.Errorf("%s: the source runs no transactions", name)
	}
	ts := eos[0].sink.(agent.TxnSink)
	t, _ := ts.TxnTarget()
	if !sameBrokers(src.Brokers(), t.Brokers) {
		return fmt.Errorf("%s: the sink's brokers %v must be the source's %v (one transaction on one cluster)", name, t.Brokers, src.Brokers())
	}
	tr, err := src.Transactions(p.stage.pt.cl, t)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	ts.CarryInTransactions()
	pt := p.stage.pt
	pt.txn, pt.sink = tr, ts
	pt.early = make(chan struct{}, 1)
	m, pn := p.deps.Metrics, p.spec.Name
	pt.txns = m.Counter("pspf_state_transactions_total", "pipeline", pn, "result", "committed")
	pt.txnAborts = m.Counter("pspf_state_transactions_total", "pipeline", pn, "result", "aborted")
	pt.txnOutputs = m.Counter("pspf_state_transaction_outputs_total", "pipeline", pn)
	m.Gauge("pspf_state_held_output_bytes", func() float64 { return float64(pt.held.Load()) }, "pipeline", pn)
	p.log.Info("exactly-once: outputs, changelog and input offsets commit in one transaction per checkpoint", "sink", eos[0].name, "transactional_id", t.TransactionalID)
	return nil
}

// checkExactlyOnce reports, on the sink's entry, the pipeline files where
// a sink with delivery: exactly_once meets a source in a group, but the
// rest cannot make it exactly-once (the same rules as exactlyOnce, at
// parse time).
func checkExactlyOnce(spec *PipelineSpec, r *Registry) {
	var sink *ComponentSpec
	var sinkBrokers []string
	for i := range spec.Sinks {
		if c, ok := spec.Sinks[i].Config.(agent.TxnConfig); ok {
			if b, on := c.TxnCluster(); on {
				sink, sinkBrokers = &spec.Sinks[i], b
				break
			}
		}
	}
	if sink == nil {
		return
	}
	var srcBrokers []string
	grouped := false
	for i := range spec.Sources {
		if c, ok := spec.Sources[i].Config.(agent.TxnConfig); ok {
			if b, on := c.TxnCluster(); on {
				srcBrokers, grouped = b, true
			}
		}
	}
	if !grouped {
		return
	}
	const what = "delivery: exactly_once with a kafka source in a group"
	d := sink.Node.Field("delivery")
	switch {
	case len(spec.Sources) != 1:
		d.Errorf("%s: the kafka source must be the pipeline's only source", what)
	case firstStateful(spec, r) < 0:
		d.Errorf("%s: needs stateful operators with state: {store: kafka, changelog: TOPIC} (their outputs commit with the input offsets)", what)
	case spec.State.Store != StoreKafka:
		d.Errorf("%s: needs state: {store: kafka, changelog: TOPIC}, got store %s", what, spec.State.Store)
	case len(spec.Sinks) != 1:
		d.Errorf("%s: it must be the pipeline's only sink", what)
	case !sameBrokers(srcBrokers, sinkBrokers):
		sink.Node.Field("brokers").Errorf("%s: must be the source's brokers %v (one transaction on one cluster)", what, srcBrokers)
	}
}

// sameBrokers reports whether a and b list the same brokers.
func sameBrokers(a, b []string) bool {
	norm := func(xs []string) []string {
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = strings.ToLower(strings.TrimSpace(x))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(norm(a), norm(b))
}

// hold keeps b's records, encoded by the sink, as outputs of the
// partition whose chain emitted them, for the next checkpoint's
// transaction. The caller holds mu.
func (s *statefulStage) hold(ctx context.Context, b *agent.Batch) {
	pt := s.pt
	pc := pt.cur
	var dead []agent.Dead
	for i := range b.Records {
		r := &b.Records[i]
		if pc == nil {
			dead = append(dead, agent.Dead{Record: *r, Component: "stateful", Err: errors.New("exactly-once: an output of no partition's chain cannot be committed with an input offset")})
			continue
		}
		tr, err := pt.sink.EncodeTxn(r)
		if err != nil {
			dead = append(dead, agent.Dead{Record: *r, Component: "stateful", Err: err})
			continue
		}
		n := len(tr.Topic) + len(tr.Key) + len(tr.Value)
		for _, h := range tr.Headers {
			n += len(h.Key) + len(h.Value)
		}
		pc.out = append(pc.out, tr)
		pc.outBytes += n
		if pt.held.Add(int64(n)) > maxHeldBytes {
			select {
			case pt.early <- struct{}{}:
			default:
			}
		}
	}
	if len(dead) > 0 {
		s.p.deadLetter(ctx, dead)
	}
}

// earlyCh receives when the held outputs want a checkpoint; nil (never)
// without exactly-once.
func (s *statefulStage) earlyCh() <-chan struct{} {
	if s.pt == nil {
		return nil
	}
	return s.pt.early
}

// commitTxn runs the checkpoint's transaction: the changelog records of
// every owned partition, their held outputs and their positions. The
// caller holds mu (the stage is paused).
func (s *statefulStage) commitTxn(ctx context.Context) error {
	pt := s.pt
	tx := &agent.Txn{Changes: map[int32][]agent.ChangelogRecord{}, Offsets: map[agent.TopicPartition]int64{}}
	owned := s.ownedSorted()
	var n int
	for _, t := range owned {
		pc := pt.chains[t]
		recs, err := s.changes(pc)
		if err != nil {
			return fmt.Errorf("partition %s[%d]: %w", t.Topic, t.Partition, err)
		}
		if len(recs) > 0 {
			tx.Changes[t.Partition] = append(tx.Changes[t.Partition], recs...)
		}
		tx.Outputs = append(tx.Outputs, pc.out...)
		n += len(recs)
		if pc.next >= 0 {
			tx.Offsets[t] = pc.next
		}
	}
	if n == 0 && len(tx.Outputs) == 0 {
		return nil // nothing changed: no transaction
	}
	nexts, err := pt.txn.Commit(ctx, tx)
	if err != nil {
		pt.clErrors.Inc()
		pt.txnAborts.Inc()
		if !errors.Is(err, agent.ErrTxnAborted) {
			// Committed or not: state.db and the changelog say which
			// once the pipeline starts again.
			s.fail(fmt.Errorf("exactly-once: %w", err))
		}
		return fmt.Errorf("exactly-once: %w", err)
	}
	pt.txns.Inc()
	pt.appended.Add(n)
	pt.txnOutputs.Add(len(tx.Outputs))
	for _, t := range owned {
		pc := pt.chains[t]
		if next, ok := nexts[t.Partition]; ok {
			if err := s.noteCLOffset(pc, next); err != nil {
				return err
			}
		}
		clear(pc.dirty)
		clear(pc.out)
		pc.out = pc.out[:0]
		pt.held.Add(-int64(pc.outBytes))
		pc.outBytes = 0
	}
	return nil
}

// dropUncommitted drops from state.db the tables of partitions let go
// with changes no transaction committed, so that a later assignment
// restores them from the changelog alone; it reports whether it dropped
// any (a checkpoint then makes that final). The caller holds mu.
func (s *statefulStage) dropUncommitted(gone []*partChain) bool {
	dropped := false
	for _, pc := range gone {
		s.pt.held.Add(-int64(pc.outBytes))
		if len(pc.dirty) == 0 && len(pc.out) == 0 {
			continue
		}
		for name := range pc.tables {
			if err := s.db.DropTable(name); err != nil {
				s.log.Warn("exactly-once: cannot drop the cached state of a partition let go uncommitted", "table", name, "err", err)
			}
		}
		s.log.Warn("exactly-once: partition let go with changes not committed; its outputs since the last checkpoint are discarded and its next owner recomputes them",
			"topic", pc.tp.Topic, "partition", pc.tp.Partition, "outputs", len(pc.out))
		dropped = true
	}
	return dropped
}
