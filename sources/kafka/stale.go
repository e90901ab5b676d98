package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
)

// Partitions of an earlier membership.
//
// A member that was stopped (SIGSTOP, a long GC, a suspended VM) past its
// session is dropped from the group and its partitions go to others, which
// restore them and commit them. When it runs again its commits are
// refused (ILLEGAL_GENERATION) and franz-go, on JoinGroup answered
// UNKNOWN_MEMBER_ID, joins again without a member id and without
// OnPartitionsLost: the cooperative consumer still holds the old
// partitions and gives them up later with OnPartitionsRevoked, in the new
// generation. A commit of them then carries the new member id and
// generation, which the coordinator accepts (it checks the member and
// generation, not who owns the partitions), though their new owner may
// have committed beyond them: under exactly_once, their windows would be
// committed twice.
//
// So every partition remembers the member id it was assigned under
// (onAssigned), and a partition held under another id than the member's
// now is never committed: its revoke lets it go as lost (no checkpoint,
// its uncommitted outputs dropped; one WARN per revoke, counted in
// pspf_kafka_source_rebalances_total{event="stale"}), commitLocked skips
// it and a transaction with its offsets is refused (errStaleMember, the
// transaction aborted), so a checkpoint between the new sync and the
// revoke commits nothing of it either. If the new membership is given the
// same partitions back (no revoke, no assign), the refused transaction
// has the next Read let them go as lost and restart the client: its
// assignment restores them from the changelog, never from the state held
// under the old membership.

// errStaleMember refuses the offsets of partitions assigned under an
// earlier membership of the group.
var errStaleMember = errors.New("kafka source: partitions assigned under an earlier membership of the group (the member was dropped and joined again): not committed")

// splitStale returns the partitions of parts assigned under member, and
// those assigned under another member id.
func splitStale(parts []*partState, member string) (fresh, stale []*partState) {
	for _, ps := range parts {
		if ps.member != member {
			stale = append(stale, ps)
		} else {
			fresh = append(fresh, ps)
		}
	}
	return fresh, stale
}

// loseStale lets go, as lost, partitions assigned under an earlier
// membership; commitMu is held.
func (s *Source) loseStale(stale []*partState, member string) {
	s.stale.Inc()
	if s.owner != nil {
		s.owner.Revoked(context.Background(), topicPartitions(stale), true)
	}
	s.drop(stale)
	s.log.Warn("kafka source: partitions held under an earlier membership of the group (the member was dropped and joined again) let go as lost: not checkpointed nor committed, their next owner has them",
		"group", s.group, "member", member, "partitions", partNames(stale))
}

// loseStaleHeld lets go, as lost, every partition held under another
// member id than cl's now.
func (s *Source) loseStaleHeld(cl *kgo.Client) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	member, _ := s.membership(cl)
	s.mu.Lock()
	var held []*partState
	for _, ps := range s.parts {
		if ps.member != member {
			held = append(held, ps)
		}
	}
	s.staleWarned = false // the episode ends with the restart
	s.mu.Unlock()
	if len(held) > 0 {
		s.loseStale(held, member)
	}
}

// staleOffsets returns errStaleMember, with a WARN once per episode and
// counted, if offsets hold a partition assigned under another member id
// than member.
func (s *Source) staleOffsets(offsets map[agent.TopicPartition]int64, member string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var stale []string
	for t := range offsets {
		if ps := s.parts[tp{t.Topic, t.Partition}]; ps != nil && ps.member != member {
			stale = append(stale, ps.heldAs())
		}
	}
	if len(stale) == 0 {
		s.staleWarned = false
		return nil
	}
	s.noteStaleLocked(stale, member)
	return fmt.Errorf("%w: %v", errStaleMember, stale)
}

// noteStaleLocked reports partitions of an earlier membership that a
// commit left out, once per episode: one WARN, counted, and the next Read
// lets them go as lost and restarts the client (given back to the new
// membership, they would never be revoked), whose assignment restores
// them. mu is held.
func (s *Source) noteStaleLocked(stale []string, member string) {
	if s.staleWarned {
		return
	}
	sort.Strings(stale)
	s.staleWarned = true
	s.stale.Inc()
	s.restartStale.Store(true)
	s.restart.Store(true)
	s.log.Warn("kafka source: a commit holds offsets of partitions assigned under an earlier membership of the group; not committed, the client restarts",
		"group", s.group, "member", member, "partitions", stale)
}

// heldAs names the partition and the member id it was assigned under, as
// topic[partition] (member id).
func (ps *partState) heldAs() string {
	return fmt.Sprintf("%s[%d] (member %s)", ps.topic, ps.partition, ps.member)
}

// partNames returns the partitions of parts as topic[partition].
func partNames(parts []*partState) []string {
	out := make([]string, len(parts))
	for i, ps := range parts {
		out[i] = fmt.Sprintf("%s[%d]", ps.topic, ps.partition)
	}
	sort.Strings(out)
	return out
}
