package runner

import (
	"time"

	"github.com/pspf/pspf-edge/buffer"
)

// Status is a snapshot of a pipeline's counters, its log and its sinks, for
// the admin API. Counters count since the agent started (they carry over
// reloads, because a pipeline's counters are keyed by its name); the rest is
// the state at the moment of the call. It is safe to take while Run runs,
// and after it has returned.
type Status struct {
	// Sources, Operators and Sinks are in file order.
	Sources   []SourceStatus   `json:"sources"`
	Operators []OperatorStatus `json:"operators"`
	Sinks     []SinkStatus     `json:"sinks"`
	// DeadLetter is the dead-letter sink, if one is configured.
	DeadLetter *SinkStatus `json:"dead_letter,omitempty"`
	// DeadLetters counts records sent to the dead-letter log.
	DeadLetters uint64 `json:"dead_letters"`
	// Log is the log the sinks read: the pipeline log, or, with stateful
	// operators, their outbox. Its Drops include those of Input.
	Log LogStatus `json:"log"`
	// Input is the pipeline log when the pipeline has stateful operators
	// (they read it); its Backlog is the records they have not processed
	// yet.
	Input *LogStatus `json:"input,omitempty"`
	// Drops counts records dropped by operators and sinks by reason
	// (pspf_dropped_total, like "filtered" or "sink_rejected"), since the
	// agent started. The log's own drops are in Log.Drops.
	Drops map[string]uint64 `json:"drops"`
	// StateResets counts the times the stateful operators' state file was
	// found damaged, or missing though a checkpoint had been committed, and
	// the state started empty and was rebuilt from the pipeline log, since
	// the agent started (pspf_state_resets_total).
	StateResets uint64 `json:"state_resets"`
	// StateStore is the stateful operators' state store, when the
	// pipeline has stateful operators.
	StateStore *StateStoreStatus `json:"state_store,omitempty"`
	// Partitions is the group membership and the partitions owned, when
	// the stateful operators keep their state per input partition (a
	// Kafka source in a group).
	Partitions *PartitionsStatus `json:"partitions,omitempty"`
	// LastError is the last error a component reported, or ""; a sink's
	// is cleared once that sink delivers again.
	LastError string `json:"last_error,omitempty"`
}

// PartitionsStatus is the membership of a pipeline whose state is kept per
// input partition, and its partitions (stateful_parts.go).
type PartitionsStatus struct {
	Group      string `json:"group"`
	MemberID   string `json:"member_id,omitempty"`
	Generation int32  `json:"generation"` // the group's; -1 while not joined
	// Owned are the partitions this agent consumes, in order.
	Owned []OwnedPartition `json:"owned"`
	// Lag is the sum of the owned partitions' lags.
	Lag int64 `json:"lag"`
	// Restoring are the restores from the changelog running now (store
	// kafka): a partition is read once its restore has ended.
	Restoring []RestoreStatus `json:"restoring,omitempty"`
}

// OwnedPartition is one partition an agent owns.
type OwnedPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Lag is the records after the last one read, as of the last fetch.
	Lag int64 `json:"lag"`
	// Checkpointed is the offset of the next record the partition's
	// last committed checkpoint has not taken in (-1: none yet); the
	// offset committed to the group.
	Checkpointed int64 `json:"checkpointed"`
}

// StateStoreStatus describes a pipeline's state store, as of the stateful
// stage's last timer tick (at most about 100 ms old while it runs).
type StateStoreStatus struct {
	// Store is "bbolt" (state.db), "memory" or "kafka" (a changelog, state.db its cache).
	Store string `json:"store"`
	// Bytes is the state held in memory, charged as the budget counts it:
	// the cache in front of state.db, or all of a memory store's state.
	Bytes int64 `json:"bytes"`
	// Budget is the byte budget: bbolt's cache may exceed it by the
	// changes since the last checkpoint; memory's state never does.
	Budget int64 `json:"budget"`
	// Keys counts the keys held in memory (bbolt: the cached ones).
	Keys int `json:"keys"`
	// Refused counts the writes the memory store refused because they
	// would have exceeded the budget (state.ErrFull), since its state
	// started (it carries over reloads). The operator that made one got
	// the error: dedup, for one, fails its batch, which goes to the dead
	// letters.
	Refused uint64 `json:"refused,omitempty"`
}

// SourceStatus counts what one source did.
type SourceStatus struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Records uint64 `json:"records"` // records read
	Errors  uint64 `json:"errors"`  // failed connects and reads
	Nacks   uint64 `json:"nacks"`   // batches handed back for redelivery
}

// OperatorStatus counts what one operator did.
type OperatorStatus struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	RecordsIn  uint64 `json:"records_in"`
	RecordsOut uint64 `json:"records_out"`
	Errors     uint64 `json:"errors"` // failed batches, panics included
}

// SinkStatus is one sink's delivery state.
type SinkStatus struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Records uint64 `json:"records"` // records the destination accepted
	Bytes   uint64 `json:"bytes"`
	Errors  uint64 `json:"errors"`
	Retries uint64 `json:"retries"`
	// Rejected counts records the destination refused for good (dead-lettered).
	Rejected uint64 `json:"rejected"`
	// Online is false from a failed connect or write (or the sink's report
	// that the destination stopped answering while a write waits) until the
	// next success.
	Online bool `json:"online"`
	// OfflineSince is when the destination was first found unreachable in
	// the current outage; zero while online.
	OfflineSince time.Time `json:"offline_since,omitzero"`
	// Acked is the last log sequence the destination accepted (everything
	// up to it was delivered).
	Acked uint64 `json:"acked"`
	// Backlog is how many records of the log the sink has not delivered.
	Backlog uint64 `json:"backlog"`
	// LogDropped counts the records the log's overflow policy (or max_age)
	// deleted before this sink read them, since the log was opened. With
	// several sinks it can exceed the log's own drop count, which counts
	// only records no sink had read.
	LogDropped uint64 `json:"log_dropped"`
	// LastError is why the sink is offline (or why its last attempt failed);
	// "" once the destination accepted a batch again.
	LastError string `json:"last_error,omitempty"`
}

// LogStatus describes a pipeline log.
type LogStatus struct {
	Records    uint64 `json:"records"`    // records retained (delivered or not)
	DiskBytes  int64  `json:"disk_bytes"` // bytes of the segment files
	MaxBytes   int64  `json:"max_bytes"`  // the byte cap
	FirstSeq   uint64 `json:"first_seq"`
	NextSeq    uint64 `json:"next_seq"`
	DurableSeq uint64 `json:"durable_seq"`
	// Fsyncs counts the segment fsyncs since the log was opened: each
	// writes at least a page of flash (see sync_interval).
	Fsyncs uint64    `json:"fsyncs"`
	Oldest time.Time `json:"oldest,omitzero"` // creation of the oldest segment
	// Backlog is the largest sink backlog: the records not yet delivered to
	// every sink.
	Backlog uint64 `json:"backlog"`
	// BacklogBytes estimates the bytes of Backlog from the average record
	// size on disk.
	BacklogBytes int64  `json:"backlog_bytes"`
	Lost         uint64 `json:"lost"` // records found missing (damage)
	// Drops counts the records the log dropped since it was opened (this
	// generation), by reason: "overflow_oldest", "overflow_newest", "age",
	// "disk_full".
	Drops map[string]uint64 `json:"drops,omitempty"`
	// Overflow is the policy at the cap: block, drop_oldest, drop_newest.
	Overflow string `json:"overflow,omitempty"`
	// FullSince is when the log became full in the current episode: it
	// reached MaxBytes, or a write found the disk full. Absent when it is
	// not full. The episode ends once the log has room again (1.5
	// segments under the cap, two segments free on the disk) and nothing
	// overflowed for 5 s. FullReason is "max_bytes" or "disk_full".
	FullSince  time.Time `json:"full_since,omitzero"`
	FullReason string    `json:"full_reason,omitempty"`
	// BlockedSince is FullSince while appends wait for space (overflow:
	// block): sources are not acked meanwhile. BlockedReason is
	// FullReason then.
	BlockedSince  time.Time `json:"blocked_since,omitzero"`
	BlockedReason string    `json:"blocked_reason,omitempty"`
	// FullDropped counts the records dropped or refused in the current
	// episode.
	FullDropped uint64 `json:"full_dropped,omitempty"`
	// DiskFree is what the file system holding the log still has for it
	// (statfs, read about once a second); -1 if unknown.
	DiskFree int64 `json:"disk_free"`
	// LastError is the log's last I/O or damage error; a full disk's error
	// stays here while the disk is full.
	LastError string `json:"last_error,omitempty"`
}

// logStatter is implemented by logs that can describe themselves (diskLog).
type logStatter interface{ Stats() buffer.Stats }

// Status returns a snapshot of the pipeline; see Status.
func (p *Pipeline) Status() Status {
	st := Status{LastError: p.LastError(), DeadLetters: p.deadCount.Get(), Drops: map[string]uint64{}}
	for i, s := range p.sources {
		st.Sources = append(st.Sources, SourceStatus{Name: s.name, Type: p.spec.Sources[i].Type,
			Records: s.records.Get(), Errors: s.errors.Get(), Nacks: s.nacks.Get()})
	}
	for i := range p.ops {
		o := &p.ops[i]
		st.Operators = append(st.Operators, OperatorStatus{Name: o.name, Type: p.spec.Operators[i].Type,
			RecordsIn: o.in.Get(), RecordsOut: o.out.Get(), Errors: o.failures.Get() + o.panics.Get()})
	}
	var cursors map[string]buffer.CursorStats
	var avg float64 // bytes per record on disk
	st.Log, cursors, avg = logStatus(p.sinkLog(), p.spec.Buffer)
	if p.stage != nil {
		ops := p.stage.ops
		if p.stage.pt != nil {
			ops = p.stage.pt.counters
			st.Partitions = p.stage.partitionsStatus()
		}
		for i := range ops {
			o := &ops[i]
			st.Operators = append(st.Operators, OperatorStatus{Name: o.name, Type: p.spec.Operators[len(p.ops)+i].Type,
				RecordsIn: o.in.Get(), RecordsOut: o.out.Get(), Errors: o.failures.Get() + o.panics.Get()})
		}
		in, _, _ := logStatus(p.plog, p.spec.Buffer)
		if next := p.stage.nextPub.Load(); in.NextSeq > next {
			in.Backlog = in.NextSeq - next
		}
		st.Input = &in
		st.StateResets = p.stage.resets.Get()
		if ss := p.stage.stats.Load(); ss != nil {
			st.StateStore = &StateStoreStatus{Store: p.spec.State.Store, Bytes: ss.CacheBytes, Budget: ss.Budget, Keys: ss.Entries, Refused: ss.Refused}
		}
		if len(in.Drops) > 0 && st.Log.Drops == nil {
			st.Log.Drops = map[string]uint64{}
		}
		for k, n := range in.Drops {
			st.Log.Drops[k] += n
		}
	}
	for i, s := range p.sinks {
		ss := s.status(p.spec.Sinks[i].Type, cursors)
		st.Log.Backlog = max(st.Log.Backlog, ss.Backlog)
		st.Sinks = append(st.Sinks, ss)
	}
	st.Log.BacklogBytes = int64(float64(st.Log.Backlog) * avg)
	if p.dead != nil {
		ss := p.dead.status(p.spec.DeadLetter.Type, nil)
		st.DeadLetter = &ss
	}
	for reason, n := range p.deps.Metrics.sumByLabel("pspf_dropped_total", "pipeline", p.spec.Name, "reason") {
		st.Drops[reason] += n
	}
	// While a disk is full, its error is the pipeline's: nothing else may
	// fail meanwhile (a blocked append is not an error), and it must show.
	for _, ls := range []*LogStatus{st.Input, &st.Log} {
		if ls != nil && ls.FullReason == string(buffer.FullDiskFull) && ls.LastError != "" {
			st.LastError = ls.LastError
			break
		}
	}
	return st
}

// logStatus describes l, if it can describe itself, with its cursors by
// name and the average bytes per record on disk.
func logStatus(l Log, c BufferConfig) (st LogStatus, cursors map[string]buffer.CursorStats, avg float64) {
	ls, ok := l.(logStatter)
	if !ok {
		return st, nil, 0
	}
	bs := ls.Stats()
	st = LogStatus{Records: bs.Records, DiskBytes: bs.DiskBytes, MaxBytes: int64(c.MaxBytes), Overflow: c.Overflow,
		FirstSeq: bs.FirstSeq, NextSeq: bs.NextSeq, DurableSeq: bs.DurableSeq, Fsyncs: bs.Fsyncs, Oldest: bs.OldestRecord, Lost: bs.Lost,
		FullSince: bs.Full.Since, FullReason: string(bs.Full.Reason), FullDropped: bs.Full.Dropped, DiskFree: bs.DiskFree}
	if bs.Full.Blocked {
		st.BlockedSince, st.BlockedReason = st.FullSince, st.FullReason
	}
	if bs.LastError != nil {
		st.LastError = bs.LastError.Error()
	}
	st.Drops = map[string]uint64{}
	addDrops(st.Drops, bs.Drops)
	cursors = map[string]buffer.CursorStats{}
	for _, c := range bs.Cursors {
		cursors[c.Name] = c
	}
	if bs.Records > 0 {
		avg = float64(bs.DiskBytes) / float64(bs.Records)
	}
	return st, cursors, avg
}

func (s *sinkRun) status(typ string, cursors map[string]buffer.CursorStats) SinkStatus {
	ss := SinkStatus{Name: s.name, Type: typ, Records: s.records.Get(), Bytes: s.bytes.Get(),
		Errors: s.errs.Get(), Retries: s.retries.Get(), Rejected: s.dropped.Get(),
		Acked: s.acked.Load()}
	s.hmu.Lock()
	ss.Online, ss.LastError = s.online.Load(), s.lastErr
	if since := s.offlineSince.Load(); since != 0 {
		ss.OfflineSince = time.Unix(0, since)
	}
	s.hmu.Unlock()
	if cursors != nil {
		c := cursors["sink."+s.name]
		ss.Backlog, ss.LogDropped = c.Lag, c.Dropped
	} else if next := s.src.NextSeq(); next > ss.Acked+1 {
		ss.Backlog = next - 1 - ss.Acked
	}
	return ss
}

func addDrops(m map[string]uint64, d buffer.DropCounts) {
	for reason, n := range map[string]uint64{"overflow_oldest": d.OverflowOldest, "overflow_newest": d.OverflowNewest, "age": d.Age, "disk_full": d.DiskFull} {
		if n > 0 {
			m[reason] += n
		}
	}
}

// sumByLabel sums the counters called name that have the label match with
// exactly value, grouped by the value of label by.
func (m *Metrics) sumByLabel(name, match, value, by string) map[string]uint64 {
	out := map[string]uint64{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, c := range m.counters[name] {
		if !hasLabel(n, match, value) {
			continue
		}
		key, _ := labelValue(n, by)
		out[key] += c.Get()
	}
	return out
}

// Remove removes the metric with the given name and labels (pairs of label
// name and value), for example a gauge of a component a reload removed.
// Removing a metric that does not exist does nothing.
func (m *Metrics) Remove(name string, labels ...string) {
	n := metricName(name, labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set.UnregisterMetric(n)
	delete(m.gauges, n)
	m.forgetCounterLocked(n)
}
