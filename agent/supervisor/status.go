package supervisor

import (
	"maps"
	"math"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// PipelineView is one pipeline as /api/v1/pipelines shows it.
type PipelineView struct {
	Name       string `json:"name"`
	File       string `json:"file,omitempty"`
	Hash       string `json:"hash,omitempty"` // SHA-256 of the running config's file
	Generation int    `json:"generation"`
	// State is running, failed (no valid config yet, or it could not
	// start), restarting (it failed and is started again after a backoff)
	// or stopped (file removed, or its sources ended).
	State string `json:"state"`
	// Restarts counts the starts after a failure since the agent started.
	Restarts uint64 `json:"restarts"`
	// StateResets counts the times the stateful operators' state file was
	// found damaged (or missing) and their state rebuilt from the log.
	StateResets uint64 `json:"state_resets"`
	// LastReloadError is why the last change of the file was not applied;
	// the generation shown keeps running.
	LastReloadError string    `json:"last_reload_error,omitempty"`
	ReloadFailures  uint64    `json:"reload_failures"`
	StartedAt       time.Time `json:"started_at,omitzero"` // of the running generation
	// Backlog is the largest sink backlog, in records and estimated bytes.
	BacklogRecords uint64 `json:"backlog_records"`
	BacklogBytes   int64  `json:"backlog_bytes"`
	// OldestUnsentSeconds is the age of the oldest record not delivered to
	// every sink; 0 with no backlog.
	OldestUnsentSeconds float64 `json:"oldest_unsent_seconds"`
	// SecondsToCap is how long until the log is full — at its byte cap or
	// out of disk, whichever comes first — if the backlog keeps growing at
	// its current rate; 0 while it is full (or blocked), null while it
	// does not grow.
	SecondsToCap *float64 `json:"seconds_to_cap"`
	// BlockedSince is when appends to the pipeline's logs began to wait
	// for space (overflow: block, the log at max_bytes or the disk full):
	// sources are not acked meanwhile. Absent when nothing waits.
	// BlockedReason is "max_bytes" or "disk_full".
	BlockedSince  time.Time `json:"blocked_since,omitzero"`
	BlockedReason string    `json:"blocked_reason,omitempty"`
	// Drops counts dropped records by reason since the agent started:
	// operators and sinks (filtered, sink_rejected, ...) and the log
	// (overflow_oldest, overflow_newest, age, disk_full).
	Drops     map[string]uint64       `json:"drops"`
	Sources   []runner.SourceStatus   `json:"sources"`
	Operators []runner.OperatorStatus `json:"operators"`
	Sinks     []SinkView              `json:"sinks"`
	// Log is the log the sinks read: the pipeline log, or the stateful
	// operators' outbox; Input is then the pipeline log they read.
	Log   runner.LogStatus  `json:"log"`
	Input *runner.LogStatus `json:"input,omitempty"`
	// StateStore is the stateful operators' state store, if any.
	StateStore *runner.StateStoreStatus `json:"state_store,omitempty"`
	// Partitions is the group membership, the partitions owned with their
	// lag and checkpointed offset, and the restores running, when the
	// state is kept per input partition (a Kafka source in a group).
	Partitions *runner.PartitionsStatus `json:"partitions,omitempty"`
	// DeadLetters counts records sent to the dead-letter log.
	DeadLetters uint64 `json:"dead_letters"`
	LastError   string `json:"last_error,omitempty"`
}

// SinkView is a sink's status with its outage length.
type SinkView struct {
	runner.SinkStatus
	// OfflineSeconds is how long the current outage has lasted; 0 online.
	OfflineSeconds float64 `json:"offline_seconds"`
}

// backlogTracker turns backlog samples into a growth rate and the age of
// the oldest unsent record. Its marks remember when the log reached a
// sequence, at the sampling resolution.
type backlogTracker struct {
	marks   []mark
	last    mark
	backlog float64 // bytes at last
	rate    float64 // backlog growth, bytes/s, smoothed
	primed  bool
	// moved: the last update saw the log or the backlog change (or was the
	// first); the supervisor samples less often while nothing moves.
	moved bool
}

type mark struct {
	at   time.Time
	next uint64 // the log's NextSeq at that time
}

const maxMarks = 512

func (t *backlogTracker) reset() { *t = backlogTracker{} }

// update adds a sample: the log's next sequence, the oldest sequence not yet
// delivered to every sink, and the backlog in bytes.
func (t *backlogTracker) update(now time.Time, next, oldestUnsent uint64, backlogBytes float64) {
	t.moved = !t.primed || next != t.last.next || backlogBytes != t.backlog
	if len(t.marks) == 0 || t.marks[len(t.marks)-1].next != next {
		t.marks = append(t.marks, mark{now, next})
	}
	// Marks at or below the oldest unsent record's predecessor are no
	// longer needed, except the last one of them.
	i := 0
	for i+1 < len(t.marks) && t.marks[i+1].next <= oldestUnsent {
		i++
	}
	t.marks = t.marks[i:]
	if len(t.marks) > maxMarks { // coarsen: keep every other one
		k := 0
		for j := 0; j < len(t.marks); j += 2 {
			t.marks[k] = t.marks[j]
			k++
		}
		t.marks = t.marks[:k]
	}
	if t.primed {
		if dt := now.Sub(t.last.at).Seconds(); dt > 0 {
			r := (backlogBytes - t.backlog) / dt
			t.rate = 0.5*t.rate + 0.5*r
		}
	}
	t.primed = true
	t.last = mark{now, next}
	t.backlog = backlogBytes
}

// oldestAge is the age of record seq: it was appended after the last mark
// whose next is <= seq. fallback is used for a record older than every mark.
func (t *backlogTracker) oldestAge(now time.Time, seq uint64, fallback time.Time) float64 {
	var at time.Time
	for _, m := range t.marks {
		if m.next > seq {
			break
		}
		at = m.at
	}
	if at.IsZero() {
		at = fallback
	}
	if at.IsZero() {
		return 0
	}
	return max(0, now.Sub(at).Seconds())
}

// sample updates every running pipeline's tracker; the supervisor calls it
// every SampleEvery while a log or backlog moves, less often while none
// does (see nextSample). It reports whether one moved.
func (s *Supervisor) sample() bool {
	moved := false
	for _, n := range s.names() {
		s.mu.Lock()
		m := s.pipes[n]
		s.mu.Unlock()
		s.viewOf(m, true)
		s.mu.Lock()
		moved = moved || m.track.moved
		s.mu.Unlock()
	}
	return moved
}

// idleSampleMax is the longest time between two samples of backlogs that
// do not move. An idle agent then wakes for them once in that long, not
// every second; once a log moves again, sampling is back at SampleEvery
// within that time (a record appended meanwhile gets the time of the
// next sample as its mark: the oldest unsent age may then read up to that
// much low, and only then).
const idleSampleMax = 30 * time.Second

// nextSample returns the time to the next sample after one that took
// prev: SampleEvery after a sample that saw a move, else twice prev, up to
// idleSampleMax.
func (s *Supervisor) nextSample(prev time.Duration, moved bool) time.Duration {
	if moved {
		return s.d.SampleEvery
	}
	return max(s.d.SampleEvery, min(2*prev, idleSampleMax))
}

// sampleClock decides when backlogs are sampled. Besides its timer, a
// pipeline's append asks for a sample once nine tenths of SampleEvery have
// passed since the last one (appended): at low rates the records then
// bring the sample with them, in the wake-up they cause anyway. At 100
// msg/s with reads paced to one a second, the timer's own wake-up was a
// second episode of activity each second (a thread and the runtime's
// monitor woken: about a tenth of the agent's CPU).
//
// After a sample an append asked for, the timer is set 1.5 SampleEvery
// later than usual, so that records coming up to 2.5 s apart keep bringing
// the samples. When the timer fires while records came since the last
// sample (too early to ask: the timer is just ahead of them), it waits
// once more, up to 1.5 SampleEvery, for the next append to ask: so
// sampling moves into the records' rhythm. The timer still samples a
// backlog that moves with no appends (a sink draining) and backs off while
// nothing moves (nextSample).
type sampleClock struct {
	every time.Duration // SampleEvery
	start time.Time     // the origin of askAfter, for a monotonic int64
	// askAfter is when, in ns since start, an append may next ask.
	askAfter atomic.Int64
	seen     atomic.Bool   // an append came since the last sample
	ask      chan struct{} // cap 1: a sample is asked for
	last     time.Time     // the last sample (loop only)
	waited   bool          // the timer waits for an append (loop only)
}

func newSampleClock(every time.Duration) *sampleClock {
	return &sampleClock{every: every, start: time.Now(), ask: make(chan struct{}, 1)}
}

// appended is called after every append of a pipeline (any goroutine): it
// asks for a sample if one is due. It does not block.
func (c *sampleClock) appended() {
	if int64(time.Since(c.start)) < c.askAfter.Load() {
		if !c.seen.Load() {
			c.seen.Store(true)
		}
		return
	}
	select {
	case c.ask <- struct{}{}:
	default:
	}
}

// due reports whether an asked-for sample is due (loop only): an ask that
// raced with the previous sample is not.
func (c *sampleClock) due() bool {
	return c.waited || time.Since(c.last) >= c.soon()
}

// wait is called when the timer fires (loop only): if records came since
// the last sample and the timer has not waited yet, the gate opens at once
// and it returns the time to wait for an append, 1.5 SampleEvery; else
// false: sample now.
func (c *sampleClock) wait() (time.Duration, bool) {
	if c.waited || !c.seen.Load() {
		return 0, false
	}
	c.waited = true
	c.askAfter.Store(0)
	return c.every * 3 / 2, true
}

// sampleOnTimer is the loop's answer to its sample timer t: it waits for
// an append (sampleClock.wait) or runs sample. every is the interval
// nextSample last gave; it returns the next.
func (s *Supervisor) sampleOnTimer(t *time.Timer, every time.Duration, sample func() bool) time.Duration {
	if d, ok := s.clock.wait(); ok {
		t.Reset(d)
		return every
	}
	every = s.nextSample(every, sample())
	t.Reset(s.clock.sampled(every, false))
	return every
}

// sampleOnAsk is the loop's answer to an append's ask: sample if due.
func (s *Supervisor) sampleOnAsk(t *time.Timer, every time.Duration, sample func() bool) time.Duration {
	if !s.clock.due() {
		return every
	}
	every = s.nextSample(every, sample())
	t.Reset(s.clock.sampled(every, true))
	return every
}

// soon is how long after a sample an append may ask for the next one.
func (c *sampleClock) soon() time.Duration { return c.every * 9 / 10 }

// sampled notes a sample and returns the time to the next one on the
// timer: next (nextSample's), or 1.5 SampleEvery more after a sample an
// append asked for.
func (c *sampleClock) sampled(next time.Duration, asked bool) time.Duration {
	c.last = time.Now()
	c.waited = false
	c.seen.Store(false)
	c.askAfter.Store(int64(c.last.Add(c.soon()).Sub(c.start)))
	if asked {
		return next + c.every*3/2
	}
	return next
}

// Views returns every pipeline's view, in name order: what the admin API's
// /api/v1/pipelines and `pspf-edge status` show.
func (s *Supervisor) Views() []PipelineView {
	var out []PipelineView
	for _, n := range s.names() {
		s.mu.Lock()
		m := s.pipes[n]
		s.mu.Unlock()
		out = append(out, s.viewOf(m, false))
	}
	return out
}

// viewOf computes m's view; track also feeds the sample to its tracker.
func (s *Supervisor) viewOf(m *managed, track bool) PipelineView {
	now := s.d.Now()
	v, st, alive := s.stateOf(m)
	for k, n := range st.Drops {
		v.Drops[k] += n
	}
	if alive {
		for k, n := range st.Log.Drops {
			v.Drops[k] += n
		}
	}
	v.Sources, v.Operators, v.Log, v.Input, v.DeadLetters, v.LastError = st.Sources, st.Operators, st.Log, st.Input, st.DeadLetters, st.LastError
	v.StateResets, v.StateStore, v.Partitions = st.StateResets, st.StateStore, st.Partitions
	v.BacklogRecords, v.BacklogBytes = st.Log.Backlog, st.Log.BacklogBytes
	oldest := v.addSinks(st, now)
	s.mu.Lock()
	if track && v.State == StateRunning {
		m.track.update(now, st.Log.NextSeq, oldest, float64(st.Log.BacklogBytes))
	}
	if v.BacklogRecords > 0 {
		v.OldestUnsentSeconds = m.track.oldestAge(now, oldest, st.Log.Oldest)
	}
	v.addBlocked(st)
	if v.State == StateRunning {
		v.SecondsToCap = secondsToCap(st, m.track.rate)
	}
	s.mu.Unlock()
	m.view.Store(&v)
	return v
}

// stateOf returns the start of m's view (its name, file, generation,
// state and reload counts), the status of its generation, the running one
// or the last, and whether that generation runs.
func (s *Supervisor) stateOf(m *managed) (PipelineView, runner.Status, bool) {
	s.mu.Lock()
	g, spec, final, removed, restarting := m.run, m.spec, m.final, m.removed, m.restart != nil
	v := PipelineView{Name: m.name, File: m.file, Generation: m.gen, LastReloadError: m.reloadErr,
		ReloadFailures: m.failures.Get(), Restarts: m.restarts.Get(), Drops: maps.Clone(m.logDrops)}
	s.mu.Unlock()
	if spec != nil {
		v.Hash = spec.Hash
	}
	alive := g != nil && g.alive()
	var st runner.Status
	switch {
	case alive:
		v.State, v.StartedAt = StateRunning, g.started
		st = g.p.Status()
	case g != nil:
		v.State = StateStopped
		st = g.p.Status()
	case final != nil:
		v.State = StateStopped
		st = *final
	default:
		v.State = StateFailed
	}
	if g == nil && final != nil && spec != nil && !removed {
		v.State = StateFailed // a reload stopped it and no generation could start
	}
	if restarting {
		v.State = StateRestarting
	}
	return v, st, alive
}

// addSinks adds the sinks' views, their offline times at now, and returns
// the oldest sequence not delivered to every sink.
func (v *PipelineView) addSinks(st runner.Status, now time.Time) uint64 {
	oldest := st.Log.NextSeq
	for _, sk := range st.Sinks {
		sv := SinkView{SinkStatus: sk}
		if !sk.OfflineSince.IsZero() {
			sv.OfflineSeconds = now.Sub(sk.OfflineSince).Seconds()
		}
		v.Sinks = append(v.Sinks, sv)
		if sk.Backlog > 0 {
			oldest = min(oldest, sk.Acked+1)
		}
	}
	return oldest
}

// addBlocked sets since when, and why, the earliest of the pipeline's logs
// that blocks its appends has been blocked.
func (v *PipelineView) addBlocked(st runner.Status) {
	for _, ls := range []*runner.LogStatus{st.Input, &st.Log} {
		if ls != nil && !ls.BlockedSince.IsZero() && (v.BlockedSince.IsZero() || ls.BlockedSince.Before(v.BlockedSince)) {
			v.BlockedSince, v.BlockedReason = ls.BlockedSince, ls.BlockedReason
		}
	}
}

// secondsToCap is how long until the sinks' log is full at rate (backlog
// growth, bytes/s): the room is what is left under its cap or on its file
// system, whichever is less. It is 0 while either log of the pipeline is
// full (blocked or dropping) or no room is left, nil while the backlog
// does not grow or the log cannot describe itself.
func secondsToCap(st runner.Status, rate float64) *float64 {
	if st.Log.MaxBytes <= 0 {
		return nil
	}
	room := max(0, st.Log.MaxBytes-st.Log.DiskBytes)
	if st.Log.DiskFree >= 0 {
		room = min(room, st.Log.DiskFree)
	}
	full := !st.Log.FullSince.IsZero() || st.Input != nil && !st.Input.FullSince.IsZero()
	var secs float64
	switch {
	case full || room == 0:
	case rate > 0 && st.Log.Backlog > 0:
		secs = float64(room) / rate
	default:
		return nil
	}
	return &secs
}

// cached returns m's last view, computing it if there is none or it is
// older than the sampling interval (for the gauges).
func (s *Supervisor) cached(m *managed) *PipelineView {
	if v := m.view.Load(); v != nil {
		return v
	}
	v := s.viewOf(m, false)
	return &v
}

// registerGauges registers m's pipeline-level gauges. They read m's last
// view, so they follow every generation. Called with s.mu held.
func (s *Supervisor) registerGauges(m *managed) {
	mt := s.d.Metrics
	l := []string{"pipeline", m.name}
	g := func(name string, f func(v *PipelineView) float64) {
		mt.Gauge(name, func() float64 { return f(s.cached(m)) }, l...)
	}
	g("pspf_pipeline_generation", func(v *PipelineView) float64 { return float64(v.Generation) })
	g("pspf_pipeline_up", func(v *PipelineView) float64 { return b2f(v.State == StateRunning) })
	g("pspf_pipeline_reload_error", func(v *PipelineView) float64 { return b2f(v.LastReloadError != "") })
	g("pspf_log_backlog_records", func(v *PipelineView) float64 { return float64(v.BacklogRecords) })
	g("pspf_log_backlog_bytes", func(v *PipelineView) float64 { return float64(v.BacklogBytes) })
	g("pspf_log_disk_bytes", func(v *PipelineView) float64 { return float64(v.Log.DiskBytes) })
	g("pspf_log_max_bytes", func(v *PipelineView) float64 { return float64(v.Log.MaxBytes) })
	g("pspf_log_records", func(v *PipelineView) float64 { return float64(v.Log.Records) })
	g("pspf_log_lost_total", func(v *PipelineView) float64 {
		n := v.Log.Lost
		if v.Input != nil {
			n += v.Input.Lost
		}
		return float64(n)
	})
	g("pspf_log_oldest_unsent_seconds", func(v *PipelineView) float64 { return v.OldestUnsentSeconds })
	g("pspf_log_seconds_to_cap", func(v *PipelineView) float64 {
		if v.SecondsToCap == nil {
			return math.Inf(1)
		}
		return *v.SecondsToCap
	})
	for _, reason := range []string{"overflow_oldest", "overflow_newest", "age", "disk_full"} {
		mt.Gauge("pspf_log_dropped_total", func() float64 { return float64(s.cached(m).Drops[reason]) }, "pipeline", m.name, "reason", reason)
	}
	g("pspf_log_blocked", func(v *PipelineView) float64 { return b2f(!v.BlockedSince.IsZero()) })
	g("pspf_log_blocked_since_seconds", func(v *PipelineView) float64 {
		if v.BlockedSince.IsZero() {
			return 0
		}
		return float64(v.BlockedSince.UnixNano()) / 1e9
	})
	g("pspf_log_disk_free_bytes", func(v *PipelineView) float64 { return float64(v.Log.DiskFree) })
	for _, reason := range []string{"max_bytes", "disk_full"} {
		mt.Gauge("pspf_log_full", func() float64 {
			v := s.cached(m)
			return b2f(v.Log.FullReason == reason || v.Input != nil && v.Input.FullReason == reason)
		}, "pipeline", m.name, "reason", reason)
	}
}

// registerSinkGauges registers the gauges of spec's sinks that m has none
// for yet, and removes those of sinks no longer in spec. Called with s.mu held.
func (s *Supervisor) registerSinkGauges(m *managed, spec *runner.PipelineSpec) {
	is := map[string]bool{}
	for _, c := range spec.Sinks {
		is[c.Name] = true
		if m.sinkGauge[c.Name] {
			continue
		}
		m.sinkGauge[c.Name] = true
		name := c.Name
		find := func() *SinkView {
			v := s.cached(m)
			for i := range v.Sinks {
				if v.Sinks[i].Name == name {
					return &v.Sinks[i]
				}
			}
			return nil
		}
		l := []string{"pipeline", m.name, "component", name}
		s.d.Metrics.Gauge("pspf_sink_online", func() float64 {
			if sv := find(); sv != nil {
				return b2f(sv.Online)
			}
			return 0
		}, l...)
		s.d.Metrics.Gauge("pspf_sink_offline_seconds", func() float64 {
			if sv := find(); sv != nil {
				return sv.OfflineSeconds
			}
			return 0
		}, l...)
		s.d.Metrics.Gauge("pspf_sink_backlog_records", func() float64 {
			if sv := find(); sv != nil {
				return float64(sv.Backlog)
			}
			return 0
		}, l...)
	}
	for name := range m.sinkGauge {
		if !is[name] {
			delete(m.sinkGauge, name)
			for _, g := range []string{"pspf_sink_online", "pspf_sink_offline_seconds", "pspf_sink_backlog_records"} {
				s.d.Metrics.Remove(g, "pipeline", m.name, "component", name)
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
