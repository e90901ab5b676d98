package agent

import (
	"context"
	"errors"
	"time"
)

// A partitioned source reads partitions that a consumer group spreads over
// the agents of the group (Kafka). When such a source is the only source
// of a pipeline with stateful operators, the runner keeps the operators'
// state per input partition: each partition owned has its own instance of
// every stateful operator, with tables of its own, so that a partition
// and its state move together from one agent to another. The runner is
// then the source's PartitionOwner:
//
//   - Assigned, before any record of a partition given to this agent is
//     read, restores the partition's state and returns the offset that
//     state has taken in, where the source resumes reading it (the records
//     before were applied already; the ones after are not);
//   - Revoked, before a partition goes to another member, returns once the
//     records of it already handed over have been taken into its state and
//     that state is checkpointed, then lets the partition go; the
//     partition's next owner restores it from the checkpoint (a shared
//     store: a changelog topic) and resumes at its offset;
//   - Committable says up to which offset each owned partition's state is
//     checkpointed: the source commits those offsets to the group, not
//     those of the records merely durable in the log, so that a member
//     that restores no state (a store that is not shared) still starts
//     where the last checkpoint ended.
//
// Records of a partition that is not owned, and records before the offset
// a partition's state has taken in (read again after a rebalance or a
// restart), are not applied to the state again.

// TopicPartition names one input partition of a partitioned source.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// PartitionOwner keeps the state of the partitions a partitioned source
// owns (see above). The source calls Assigned and Revoked from its group's
// rebalance callbacks, one at a time, and Committable from any goroutine;
// all three are safe for concurrent use with the pipeline's processing.
type PartitionOwner interface {
	// Assigned restores the state of parts and returns, per partition,
	// the offset of the next record its state has not taken in; a
	// negative offset says that the partition has no state here, and is
	// read from its first record (the source's start setting may say
	// otherwise), so that its state is rebuilt from the input; a
	// partition absent from the result starts at the group's committed
	// offset. It blocks while the state is restored (a
	// changelog read to its end); an error (ctx ended, the store cannot
	// be read) leaves parts unowned.
	Assigned(ctx context.Context, parts []TopicPartition) (map[TopicPartition]int64, error)
	// Revoked lets parts go. Unless lost (the member was fenced or timed
	// out: another one may own them already), it first waits for the
	// records of parts handed over so far to be taken into their state
	// and checkpoints it, until ctx ends. It returns the offsets to
	// commit for parts (absent: nothing checkpointed).
	Revoked(ctx context.Context, parts []TopicPartition, lost bool) map[TopicPartition]int64
	// Committable returns, per owned partition, the offset of the next
	// record its last committed checkpoint has not taken in.
	Committable() map[TopicPartition]int64
}

// PartitionedSource is implemented by a source whose records come from
// partitions that a consumer group moves between agents.
type PartitionedSource interface {
	Source
	// PartitionFields returns the names of the fields in which every
	// record carries its topic (a string), partition and offset (ints),
	// and ok true when the source is a group member that adds them.
	PartitionFields() (topic, partition, offset string, ok bool)
	// SetPartitionOwner hands the source the owner of its partitions'
	// state. The runner calls it once, before Connect.
	SetPartitionOwner(o PartitionOwner)
	// GroupStatus returns the source's membership now, for status. It
	// must not wait for the group.
	GroupStatus() GroupStatus
}

// GroupStatus is a partitioned source's membership of its group.
type GroupStatus struct {
	Group string `json:"group"`
	// MemberID and Generation are the member's id and the group's
	// generation (-1 while not joined).
	MemberID   string `json:"member_id,omitempty"`
	Generation int32  `json:"generation"`
	// Partitions are the partitions the member consumes, in order, with
	// their lag as of the last fetch.
	Partitions []PartitionLag `json:"partitions"`
}

// PartitionLag is a partition and its lag: the records after the last one
// read (to the high watermark, or the last stable offset with
// read_committed), as of the last fetch.
type PartitionLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Lag       int64  `json:"lag"`
}

// ChangelogSource is implemented by a partitioned source whose cluster
// can keep the partitions' state: a compacted changelog topic (`state:
// {store: kafka, changelog: TOPIC}`).
type ChangelogSource interface {
	PartitionedSource
	// Changelog returns the changelog called topic on the source's
	// cluster, with the source's connection settings. It connects
	// nothing yet; the first Append or Read does, and creates the topic
	// (compacted, with as many partitions as the input) if it does not
	// exist.
	Changelog(topic string) (Changelog, error)
}

// ChangelogRecord is one change of a partition's state: a key and its new
// value; a nil Value deletes the key (a tombstone).
type ChangelogRecord struct {
	Key, Value []byte
}

// Changelog is a compacted topic partitioned like the input: partition p
// holds the changes of the state of input partition p, the last value of
// every key of it surviving compaction. Its methods are safe for
// concurrent use.
type Changelog interface {
	// Append writes recs to partition p, in order, and returns once the
	// cluster has them all durably (acks=all), with the offset after the
	// last; the records are not retained.
	Append(ctx context.Context, p int32, recs []ChangelogRecord) (next int64, err error)
	// Read calls fn, in order, for every record of partition p from
	// offset from up to the partition's end as of the call, and returns
	// the offset after the last one read (the end). progress, when not
	// nil, is called about every second with the offset reached and the
	// end. fn's slices are valid only during the call.
	Read(ctx context.Context, p int32, from int64, fn func(key, value []byte) error, progress func(at, end int64)) (next int64, err error)
	// Close releases the changelog's connections.
	Close()
}

// Exactly-once across a group (`delivery: exactly_once` on a Kafka sink of
// a pipeline whose source is a Kafka source in a group, with `state:
// {store: kafka}`): every checkpoint is one transaction on the source's
// cluster that holds, for every owned partition, the changelog records of
// its state, the outputs its operators emitted since the last checkpoint
// (held back by the runner, never written to the sink's log), and its
// position as the group's committed offset. A read_committed consumer
// sees a checkpoint's outputs all at once, when it commits, or never; the
// next owner of a partition restores exactly the state whose outputs are
// visible and resumes at its offset.

// TxnRecord is a record a transaction produces to an output topic.
type TxnRecord struct {
	Topic      string
	Key, Value []byte // Key nil: no key
	Headers    []TxnHeader
	Time       time.Time // zero: the time of the produce
}

// TxnHeader is a header of a TxnRecord.
type TxnHeader struct {
	Key   string
	Value []byte
}

// TxnTarget is where and how a TxnSink's records are produced.
type TxnTarget struct {
	// Brokers are the sink's seed brokers: the transaction runs on the
	// source's cluster, which must be the same.
	Brokers []string
	// TransactionalID is the id of the transactions; stable across
	// restarts of the same agent and unique to it.
	TransactionalID string
	// RoundRobin spreads records over the partitions regardless of
	// their keys; false: by key (keyless ones spread).
	RoundRobin bool
}

// TxnSink is implemented by a sink whose records a partitioned source's
// transactions can carry (the Kafka sink).
type TxnSink interface {
	Sink
	// TxnTarget returns the sink's target, and ok true when the sink
	// is configured to deliver exactly once.
	TxnTarget() (t TxnTarget, ok bool)
	// CarryInTransactions tells the sink, before Connect, that the
	// runner produces its records in the source's transactions: Write
	// will not be called, and the sink keeps no transactions nor cursor
	// of its own.
	CarryInTransactions()
	// EncodeTxn returns the record rec becomes (topic, key, value and
	// headers as Write would produce it). An error says rec can never be
	// produced (a topic template that fails on it): a dead letter. The
	// result does not share memory with rec.
	EncodeTxn(rec *Record) (TxnRecord, error)
}

// TxnSource is a changelog source that runs the transactions of
// exactly-once.
type TxnSource interface {
	ChangelogSource
	// Brokers returns the source's seed brokers.
	Brokers() []string
	// Transactions returns the transactor of the pipeline, with target
	// t, over changelog cl (from Changelog). The runner calls it once,
	// before Connect; the source then reads with read_committed and, on
	// an assignment, waits for the offsets of transactions still open
	// to be committed or aborted before the owner restores.
	Transactions(cl Changelog, t TxnTarget) (Transactor, error)
}

// Txn is the content of one transaction.
type Txn struct {
	// Changes are the changelog records by changelog partition, in order.
	Changes map[int32][]ChangelogRecord
	// Outputs are the records for output topics.
	Outputs []TxnRecord
	// Offsets are the input offsets committed to the group: per
	// partition, that of the next record its state has not taken in.
	Offsets map[TopicPartition]int64
}

// ErrTxnAborted is wrapped by a Transactor's error when the transaction
// was aborted for sure (a produce failed, the group moved on): none of it
// is visible, and the same changes may go in a later transaction. Any
// other error leaves the outcome unknown.
var ErrTxnAborted = errors.New("transaction aborted")

// Transactor commits transactions (see Txn). Its methods are safe for
// concurrent use; transactions run one at a time.
type Transactor interface {
	// Commit runs t in one transaction and returns, for every changelog
	// partition t.Changes wrote to, the offset after its last record.
	// The group's member must own every partition of t.Offsets: the
	// commit of a member that is no longer in the group's generation is
	// refused by the cluster, and t aborted.
	Commit(ctx context.Context, t *Txn) (map[int32]int64, error)
	// Close aborts a transaction left open and releases the client.
	Close()
}

// TxnConfig is implemented by the configs of the components that take
// part in exactly-once across a group, so that the checks of that mode
// are made when the pipeline file is parsed (`pspf-edge validate`).
type TxnConfig interface {
	// TxnCluster returns the component's seed brokers and whether it
	// takes part: a sink with delivery: exactly_once, a source that
	// consumes in a group and adds its partition fields.
	TxnCluster() (brokers []string, ok bool)
}
