package kafka

import (
	"context"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
)

// Partition-scoped state (agent.PartitionedSource). When the runner keeps
// the pipeline's state per input partition, it is the source's
// agent.PartitionOwner, and the group's callbacks tell it which partitions
// this member owns:
//
//   - a partition assigned starts at the offset its restored state has
//     taken in (AdjustFetchOffsetsFn, called after OnPartitionsAssigned
//     and before any fetch), not at the group's committed offset: the
//     state is the truth, the committed offset only its last checkpoint;
//   - a partition revoked is let go once its records handed over are
//     durable (as without an owner), then taken into its state and
//     checkpointed (the owner's Revoked), and only then committed;
//   - commits carry the owner's checkpointed offsets (Committable), never
//     those of records only durable in the log: a member that takes the
//     partition over without its state (a store that is not shared)
//     starts at the last checkpoint, not after records whose state was
//     never saved.

// PartitionFields returns the record fields that name a record's
// partition and offset: a group member with metadata has them.
func (s *Source) PartitionFields() (topic, partition, offset string, ok bool) {
	return FieldTopic, FieldPartition, FieldOffset, !s.direct && s.cfg.Metadata
}

// SetPartitionOwner hands the source the owner of its partitions' state;
// the runner calls it before Connect.
func (s *Source) SetPartitionOwner(o agent.PartitionOwner) { s.owner = o }

// adjustOffsets is the AdjustFetchOffsetsFn of a source with an owner: it
// has the owner restore the partitions' state and starts each at the
// offset the state has taken in. An error (the state could not be
// restored) ends the group session; franz-go joins again and the
// partitions come again.
func (s *Source) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var parts []agent.TopicPartition
	for topic, ps := range offsets {
		for p := range ps {
			parts = append(parts, agent.TopicPartition{Topic: topic, Partition: p})
		}
	}
	if len(parts) == 0 {
		return offsets, nil
	}
	at, err := s.owner.Assigned(ctx, parts)
	if err != nil {
		s.log.Warn("kafka source: the state of partitions assigned could not be restored; rejoining the group", "err", err)
		return nil, fmt.Errorf("kafka source: restore the state of partitions: %w", err)
	}
	for t, off := range at {
		ps, ok := offsets[t.Topic]
		switch {
		case !ok:
		case off >= 0:
			// Epoch -1: the offset comes from our state, not from a
			// fetch, so franz-go does no truncation check on it.
			ps[t.Partition] = kgo.NewOffset().At(off).WithEpoch(-1)
		case s.cfg.Start != "latest":
			// No state here: rebuilt from the partition's first record.
			ps[t.Partition] = kgo.NewOffset().AtStart()
		}
	}
	s.log.Info("kafka source: partitions' state restored", "group", s.group, "resume_at", at)
	return offsets, nil
}

// topicPartitions returns the partitions of parts for the owner.
func topicPartitions(parts []*partState) []agent.TopicPartition {
	out := make([]agent.TopicPartition, len(parts))
	for i, ps := range parts {
		out[i] = agent.TopicPartition{Topic: ps.topic, Partition: ps.partition}
	}
	return out
}

// ownerOffsets returns the offsets the owner has checkpointed, those of
// override where given.
func (s *Source) ownerOffsets(override map[agent.TopicPartition]int64) map[agent.TopicPartition]int64 {
	if override != nil {
		return override
	}
	return s.owner.Committable()
}

// GroupStatus returns the member's id, the group's generation and the
// partitions consumed with their lag.
func (s *Source) GroupStatus() agent.GroupStatus {
	st := agent.GroupStatus{Group: s.group, Generation: -1}
	if cl := s.cl.Load(); cl != nil && !s.direct {
		st.MemberID, st.Generation = cl.GroupMetadata()
	}
	s.mu.Lock()
	for t := range s.parts {
		var lag int64
		if l := s.lags[t]; l != nil {
			lag = l.Load()
		}
		st.Partitions = append(st.Partitions, agent.PartitionLag{Topic: t.topic, Partition: t.partition, Lag: lag})
	}
	s.mu.Unlock()
	sort.Slice(st.Partitions, func(i, j int) bool {
		a, b := st.Partitions[i], st.Partitions[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	return st
}
