package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
)

// How a rebalance meets the batches in flight.
//
// franz-go runs the group's callbacks on its own goroutine; with
// BlockRebalanceOnPoll none runs between a poll and its AllowRebalance, so
// every record a poll returned is in pending (or in a batch) before a
// callback sees the partitions. A revoke then:
//
//  1. takes commitMu (no periodic commit runs until it is done), drops the
//     revoked partitions' records from pending (never handed out: the next
//     owner reads them);
//  2. waits, up to half rebalance_timeout, for the batches in flight with
//     records of those partitions to be acked (the log's fsync: usually
//     milliseconds);
//  3. commits the partitions' durable offsets, synchronously, in this
//     generation (still the owner);
//  4. marks the partitions gone: an ack that comes later (a log that was
//     blocked longer than the wait) moves nothing and is never committed,
//     so it cannot rewind the next owner's commits. Those records are in
//     our log and will be read again by the next owner: duplicates, never
//     a gap.
//
// A lost partition (the member was fenced or timed out of the group) is
// marked gone at once: a commit would fail, and the next owner may
// already have committed beyond us. After a nack the source restarts its
// client the same way, from the committed offsets.

// onAssigned counts the assignment and registers the lag gauges.
func (s *Source) onAssigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	if len(assigned) == 0 || cl != s.cl.Load() {
		return
	}
	s.assigned.Inc()
	member, _ := s.membership(cl)
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, ps := range assigned {
		for _, p := range ps {
			t := tp{topic, p}
			if s.parts[t] == nil {
				s.parts[t] = newPartState(t, -1)
			}
			s.parts[t].member = member
			s.lag(t)
		}
	}
	s.log.Info("kafka source: partitions assigned", "group", s.group, "partitions", assigned)
}

// onRevoked commits what is durable of the revoked partitions and lets
// them go (see above). At the end of a session it is called with nothing
// revoked: it commits everything durable.
func (s *Source) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if cl != s.cl.Load() {
		return // a client being restarted: its partitions are gone already
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if len(revoked) == 0 {
		s.commitLocked(ctx, cl, nil, nil)
		return
	}
	s.revoked.Inc()
	parts := s.detach(revoked)
	member, _ := s.membership(cl)
	parts, stale := splitStale(parts, member)
	if len(stale) > 0 {
		s.loseStale(stale, member)
		if len(parts) == 0 {
			return
		}
	}
	if late := s.waitDurable(parts, s.cfg.RebalanceTimeout/2); len(late) > 0 {
		s.log.Warn("kafka source: revoked partitions with batches not yet durable; their next owner reads those records again",
			"partitions", late, "waited", s.cfg.RebalanceTimeout/2)
	}
	var final map[agent.TopicPartition]int64
	if s.owner != nil {
		// Their state takes in what is durable and is checkpointed;
		// what it took in is what the next owner starts after.
		octx, cancel := context.WithTimeout(ctx, s.cfg.RebalanceTimeout/2)
		final = s.owner.Revoked(octx, topicPartitions(parts), false)
		cancel()
		if final == nil {
			final = map[agent.TopicPartition]int64{}
		}
	}
	s.commitLocked(ctx, cl, parts, final)
	s.drop(parts)
	s.log.Info("kafka source: partitions revoked", "group", s.group, "partitions", revoked)
}

// onLost lets the partitions go without a commit.
func (s *Source) onLost(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	if len(lost) == 0 || cl != s.cl.Load() {
		return
	}
	s.lost.Inc()
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	parts := s.detach(lost)
	if s.owner != nil {
		s.owner.Revoked(context.Background(), topicPartitions(parts), true)
	}
	s.drop(parts)
	s.log.Warn("kafka source: partitions lost (the member left the group without a revoke); records not committed are read again", "group", s.group, "partitions", lost)
}

// detach returns the states of the partitions and drops their records
// that were polled and not handed out.
func (s *Source) detach(m map[string][]int32) []*partState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []*partState
	for topic, ps := range m {
		for _, p := range ps {
			if st := s.parts[tp{topic, p}]; st != nil {
				parts = append(parts, st)
			}
		}
	}
	keep := s.pending[:0]
	for _, kr := range s.pending {
		if _, ok := m[kr.Topic]; ok && containsPartition(m[kr.Topic], kr.Partition) {
			continue
		}
		keep = append(keep, kr)
	}
	clear(s.pending[len(keep):])
	s.pending = keep
	return parts
}

func containsPartition(ps []int32, p int32) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// waitDurable waits until no batch in flight holds records of parts that
// may still become durable, or for d, or until Close; it returns the
// partitions still waiting.
func (s *Source) waitDurable(parts []*partState, d time.Duration) []string {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var late []string
		for _, ps := range parts {
			if ps.waiting() {
				late = append(late, fmt.Sprintf("%s[%d]", ps.topic, ps.partition))
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if len(late) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return late
		case <-s.bg.Done():
			return late
		}
	}
}

// drop marks partitions gone and forgets them.
func (s *Source) drop(parts []*partState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ps := range parts {
		ps.gone = true
		if s.parts[ps.tp] == ps {
			delete(s.parts, ps.tp)
		}
		if l := s.lags[ps.tp]; l != nil {
			l.Store(0)
		}
	}
}

// commitLoop commits the durable offsets after acks move them, at most
// once per commit_interval. It ends with Close.
func (s *Source) commitLoop() {
	defer s.wg.Done()
	var last time.Time
	for {
		select {
		case <-s.bg.Done():
			return
		case <-s.poke:
		}
		if d := s.cfg.CommitInterval - time.Since(last); d > 0 && !agent.Sleep(s.bg, d) {
			return
		}
		last = time.Now()
		s.commitNow(s.bg)
	}
}

// commitNow commits the durable offsets of every partition.
func (s *Source) commitNow(ctx context.Context) {
	cl := s.cl.Load()
	if cl == nil {
		return
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.commitLocked(ctx, cl, nil, nil)
}

// commitLocked commits the durable offsets of parts (nil: every partition
// still ours) that moved since their last commit; commitMu is held. With
// an owner, the offsets are those its state has checkpointed (override,
// else Committable). Failures are retried with the next ack or revoke;
// they are logged once per episode and counted.
func (s *Source) commitLocked(ctx context.Context, cl *kgo.Client, parts []*partState, override map[agent.TopicPartition]int64) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	var which []*partState
	var owned map[agent.TopicPartition]int64
	if s.owner != nil {
		owned = s.ownerOffsets(override)
	}
	s.mu.Lock()
	if parts == nil {
		for _, ps := range s.parts {
			parts = append(parts, ps)
		}
	}
	member := ""
	if !s.direct {
		member, _ = s.membership(cl)
	}
	var stale []string
	for _, ps := range parts {
		if member != "" && ps.member != member && !ps.gone {
			// Assigned under an earlier membership (stale.go):
			// never committed.
			stale = append(stale, ps.heldAs())
			continue
		}
		off, ok := ps.toCommit()
		epoch := ps.epoch
		if s.owner != nil {
			off, ok = owned[agent.TopicPartition{Topic: ps.topic, Partition: ps.partition}]
			ok, epoch = ok && off > ps.committed, -1
		}
		if !ok || ps.gone {
			continue
		}
		if offsets[ps.topic] == nil {
			offsets[ps.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[ps.topic][ps.partition] = kgo.EpochOffset{Epoch: epoch, Offset: off}
		which = append(which, ps)
	}
	if len(stale) > 0 {
		s.noteStaleLocked(stale, member)
	}
	s.mu.Unlock()
	if len(which) == 0 {
		return
	}
	// Bounded, and ended early by ctx: the committer's ends with Close, a
	// revoke's with the client.
	cctx, cancel := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout)
	defer cancel()
	var failed map[tp]error
	var err error
	if s.direct {
		failed, err = s.commitDirect(cctx, cl, offsets)
	} else {
		failed, err = s.commitGroup(cctx, cl, offsets)
	}
	s.mu.Lock()
	for _, ps := range which {
		if err == nil && failed[ps.tp] == nil {
			ps.committed = max(ps.committed, offsets[ps.topic][ps.partition].Offset)
		}
	}
	s.mu.Unlock()
	if err == nil {
		for _, e := range failed {
			err = e
			break
		}
	}
	if err != nil && ctx.Err() != nil {
		// Ended by Close (the committer) or the client: Close commits
		// once more itself.
		s.log.Debug("kafka source: commit cut short", "err", err)
		return
	}
	if err != nil {
		s.commitErrs.Inc()
		if !s.commitFailing {
			s.commitFailing = true
			s.log.Warn("kafka source: commit failed; retrying with the next acks (a crash now replays more)", "err", err)
		} else {
			s.log.Debug("kafka source: commit failed", "err", err)
		}
		return
	}
	s.commits.Inc()
	s.log.Debug("kafka source: committed", "offsets", offsets)
	if s.commitFailing {
		s.commitFailing = false
		s.log.Info("kafka source: commits succeed again")
	}
}

// commitGroup commits as the group member, in its current generation.
func (s *Source) commitGroup(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) (map[tp]error, error) {
	var failed map[tp]error
	var rerr error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			rerr = err
			return
		}
		failed = commitErrors(resp)
	})
	if rerr != nil {
		return nil, fmt.Errorf("kafka source: commit to group %s: %w", s.group, rerr)
	}
	return failed, nil
}

// commitDirect commits for explicit partitions, outside any membership
// (generation -1: Kafka accepts it while the group has no members).
func (s *Source) commitDirect(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) (map[tp]error, error) {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group = s.group
	req.Generation = -1
	s.mu.Lock()
	ids := s.topicIDs
	s.mu.Unlock()
	names := map[[16]byte]string{}
	for topic, ps := range offsets {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID = topic, ids[topic] // the broker's version uses one of them
		names[rt.TopicID] = topic
		for p, eo := range ps {
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = p, eo.Offset, eo.Epoch
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafka source: commit to group %s: %w", s.group, err)
	}
	for i := range resp.Topics {
		if resp.Topics[i].Topic == "" {
			resp.Topics[i].Topic = names[resp.Topics[i].TopicID]
		}
	}
	return commitErrors(resp), nil
}

// commitErrors returns the partitions a commit response refused.
func commitErrors(resp *kmsg.OffsetCommitResponse) map[tp]error {
	var out map[tp]error
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				if out == nil {
					out = map[tp]error{}
				}
				out[tp{t.Topic, p.Partition}] = fmt.Errorf("kafka source: commit %s[%d]: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return out
}

// watch reports the brokers unreachable when they have been silent for
// unreachable_after (see liveness), once per episode: one WARN, the error
// as the pipeline's last_error, pspf_kafka_source_online at 0; and once
// they answer again, one INFO and the error cleared. franz-go keeps
// retrying meanwhile. It ends with Close.
func (s *Source) watch() {
	defer s.wg.Done()
	tick := time.NewTicker(max(s.cfg.UnreachableAfter/8, 10*time.Millisecond))
	defer tick.Stop()
	s.online.Store(true)
	var since time.Time
	for {
		select {
		case <-s.bg.Done():
			return
		case <-tick.C:
		}
		if s.cl.Load() == nil {
			continue // between clients: open reports its own errors
		}
		gone, cause := s.live.unreachable(s.cfg.UnreachableAfter)
		switch {
		case gone && since.IsZero():
			since = time.Now()
			s.online.Store(false)
			s.unreachable.Inc()
			err := fmt.Errorf("kafka source: no answer from the brokers for %s; retrying", s.cfg.UnreachableAfter)
			if cause != nil {
				err = fmt.Errorf("kafka source: no answer from the brokers for %s; retrying: %w", s.cfg.UnreachableAfter, cause)
			}
			s.log.Warn("kafka source: brokers unreachable; retrying with backoff", "err", err)
			if s.env.ReportError != nil {
				s.env.ReportError(err)
			}
		case !gone && !since.IsZero():
			s.log.Info("kafka source: brokers answering again", "unreachable_for", time.Since(since).Round(time.Millisecond))
			since = time.Time{}
			s.online.Store(true)
			s.logs.Reset()
			if s.env.ReportError != nil {
				s.env.ReportError(nil)
			}
		}
	}
}
