package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/buffer"
	"github.com/pspf/pspf-edge/checkpoint"
	"github.com/pspf/pspf-edge/state"
)

// TimerInterval is how often the runner calls agent.TimerHandler.OnTimer when no
// input arrives; it bounds how late a processing-time window fires.
const TimerInterval = 100 * time.Millisecond

// The stateful stage of a pipeline reads the pipeline log through the cursor
// "stateful", runs the stateful operators with their state in the
// pipeline's state store (state.db, or memory: stateful_store.go), and
// appends their output to the outbox log, which the sinks read instead of
// the pipeline log.
//
// There is one outbox shared by all the sinks, each with its own cursor on
// it, rather than one outbox per sink: every output is then written and
// fsynced once whatever the number of sinks, the checkpoint records one end
// position, and recovery cuts one log. Sinks stay independent because each
// keeps its own persistent cursor, exactly as they do on a pipeline log.
//
// A checkpoint (every interval(), early when the state cache is under
// pressure, on shutdown and on Pipeline.Checkpoint) pauses the
// stage at a batch boundary, has every operator that keeps state in memory
// write it to its table (agent.Snapshotter), fsyncs the outbox up to its end, and commits
// in one bbolt transaction the state changes, the pipeline-log position
// consumed and the outbox end. Only then is the "stateful" cursor acked, so
// that the pipeline log keeps everything a recovery may replay. Recovery (in
// newStatefulStage): load the checkpoint, cut the outbox back to its end,
// move the cursor to its position; the records after it are processed again
// into the same state and the same outputs with the same stable IDs. A state
// file that is damaged, or missing or empty though a checkpoint had been
// committed, is reset instead: stateful_reset.go. With the memory store
// there is no checkpoint to recover after a restart: the stage starts with
// empty state after the last record a checkpoint acked (stateful_store.go).

const (
	statefulCursor = "stateful"
	outboxName     = "outbox"
)

// seeker (livefirst.go) and truncater are what recovery needs from the logs
// beyond Log and LogReader; the buffer package's log and reader have them.
type truncater interface{ TruncateAfter(seq uint64) error }
type stageLogStatter interface{ Stats() buffer.Stats }

type statefulOp struct {
	opRun
	snap agent.Snapshotter  // nil: the operator keeps nothing in memory only
	tmr  agent.TimerHandler // nil: it acts on input only
}

type statefulStage struct {
	p      *Pipeline
	log    *slog.Logger
	ops    []statefulOp
	db     state.Store
	mgr    *checkpoint.Manager
	reader LogReader
	outbox Log

	mu      sync.Mutex    // held while a batch or timer runs; capture takes it
	next    uint64        // pipeline-log sequence of the next record to process
	nextPub atomic.Uint64 // next, for status (which must not wait for mu)
	ckMu    sync.Mutex    // serialises checkpoints, each with the partition offsets it captured (stateful_parts.go)
	ackMu   sync.Mutex    // serialises the cursor ack of checkpoints that run at once (timer, reload, shutdown)
	acked   uint64        // the cursor was acked up to here; under ackMu once the stage runs
	failed  error         // damaged state or a failed checkpoint commit: the stage stops
	stopped atomic.Bool   // failed is set, for those that must not wait for mu
	closed  bool          // close has begun: a checkpoint then fails with state.ErrClosed; under mu
	lastTmr time.Time
	// quiet is the last pipeline-log record whose outputs are already in
	// the outbox while the state is being rebuilt after a reset: outputs of
	// records up to it are dropped. 0 once the replay has passed it.
	quiet  uint64
	reset  *stateReset // why the state started empty, if it did (stateful_reset.go)
	marked atomic.Bool // markerName is written
	// volatile: the state store keeps nothing across restarts (memory).
	// afterAck: with no checkpoint, start after the stateful cursor's ack
	// with empty state (the memory store, or the first run with bbolt
	// after it) rather than replay the retained log (stateful_store.go).
	// fromMemory: that first bbolt run; memoryMarker goes after its first
	// checkpoint.
	// carried: the memory store came from the previous generation.
	volatile, afterAck, fromMemory, carried bool
	stats                                   atomic.Pointer[state.Stats] // the store's, refreshed by the stage's loop for status and metrics

	// specs and env build the operators: once, or per input partition
	// (parts, stateful_parts.go).
	specs []ComponentSpec
	env   func(ComponentSpec) agent.Env
	pt    *partStage // nil: one chain for the whole log

	batch agent.Batch
	buf   []LogRecord
	arena []byte
	offs  []int
	pays  [][]byte

	ckpts     *agent.Counter
	ckptFails *agent.Counter
	resets    *agent.Counter
	refused   *agent.Counter // writes the memory store refused (state.ErrFull)
	refusedAt uint64         // the store's Stats.Refused when refused was last advanced
}

// newStatefulStage opens the state store and the outbox in the pipeline's
// data dir, builds the stateful operators over their tables, and recovers
// from the last checkpoint. It starts no goroutines; on error it closes what
// it opened.
func newStatefulStage(p *Pipeline, specs []ComponentSpec, env func(ComponentSpec) agent.Env) (_ *statefulStage, err error) {
	deps := p.deps
	s := &statefulStage{p: p, log: p.log.With("stage", "stateful")}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.ckpts = p.deps.Metrics.Counter("pspf_checkpoints_total", "pipeline", p.spec.Name)
	s.ckptFails = p.deps.Metrics.Counter("pspf_checkpoint_errors_total", "pipeline", p.spec.Name)
	s.resets = p.deps.Metrics.Counter("pspf_state_resets_total", "pipeline", p.spec.Name)
	s.refused = p.deps.Metrics.Counter("pspf_state_writes_refused_total", "pipeline", p.spec.Name)
	if s.outbox, err = deps.OpenLog(filepath.Join(deps.DataDir, outboxName), outboxBufferConfig(p.spec.Buffer)); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	if s.reader, err = p.plog.Reader(statefulCursor); err != nil {
		return nil, fmt.Errorf("cursor: %w", err)
	}
	cp, ok, err := s.openStore()
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	s.specs, s.env = specs, env
	if err := s.partitioned(); err != nil {
		return nil, err
	}
	if err := s.carryOver(specs); err != nil {
		return nil, err
	}
	if s.pt == nil {
		if s.ops, err = s.buildOps("", nil); err != nil {
			return nil, err
		}
	}
	if err := s.recover(cp, ok); err != nil {
		return nil, err
	}
	s.mgr, err = checkpoint.New(s.db, checkpoint.Options{Interval: s.interval(), Capture: s.capture, Logger: s.log})
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	s.announceStore()
	s.refusedAt = s.db.Stats().Refused // counted by the generation that refused them
	s.refreshStats()
	p.deps.Metrics.Gauge("pspf_state_bytes", func() float64 { return float64(s.stats.Load().CacheBytes) }, "pipeline", p.spec.Name)
	p.deps.Metrics.Gauge("pspf_state_budget_bytes", func() float64 { return float64(s.stats.Load().Budget) }, "pipeline", p.spec.Name)
	if s.reset != nil {
		s.announceReset()
		// The replay's start and the outputs to drop become the
		// checkpoint at once: a crash during the replay resumes it.
		if err := s.checkpoint(context.Background()); err != nil {
			return nil, fmt.Errorf("state reset: %w", err)
		}
	}
	return s, nil
}

// buildOps builds the stateful operators over their tables, those of
// partition tag (partitionTag) when it is not empty.
func (s *statefulStage) buildOps(tag string, wrap func(state.Table) agent.StateTable) ([]statefulOp, error) {
	var ops []statefulOp
	for _, c := range s.specs {
		e := s.env(c)
		table := opTable(c)
		if tag != "" {
			table = partTable(table, tag)
		}
		e.State = func(ttl time.Duration) (agent.StateTable, error) {
			t, err := s.db.Table(table, ttl)
			if err != nil {
				return nil, err
			}
			if wrap != nil {
				return wrap(t), nil
			}
			return t, nil
		}
		o, err := s.p.deps.Registry.Operators[c.Type].New(c.Config, e)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Place, err)
		}
		op := statefulOp{opRun: newOpRun(c.Name, o, e)}
		op.snap, _ = o.(agent.Snapshotter)
		op.tmr, _ = o.(agent.TimerHandler)
		ops = append(ops, op)
	}
	return ops, nil
}

// opTable names the state table of a stateful operator: its name and a hash
// of its type, name, place and decoded parameters. A reload that leaves the
// operator unchanged opens the same table, and so its state; one that
// changes it opens a new, empty table. The parameters are compared decoded,
// so that writing them differently (key order, 1s for 1000ms, a default
// written out) is not a change.
func opTable(c ComponentSpec) string {
	fp := c.Fingerprint()
	if cfg, err := json.Marshal(c.Config); err == nil {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s", c.Type, c.Name, c.Place, cfg))
		fp = hex.EncodeToString(sum[:])
	}
	return "op." + c.Name + "." + fp[:16]
}

// carryOver applies the reload rule for operator state: an operator with the
// same type, name, place and parameters as in the generation that wrote the
// state file keeps its state (its table, opTable, is the same); the state of
// one that changed or was removed is dropped, with one log line each. The
// tables are deleted from the file by the next checkpoint.
func (s *statefulStage) carryOver(specs []ComponentSpec) error {
	tables, err := s.db.Tables()
	if err != nil {
		return fmt.Errorf("state tables: %w", err)
	}
	keep := map[string]bool{}
	for _, c := range specs {
		keep[opTable(c)] = true
	}
	for _, t := range tables {
		if !strings.HasPrefix(t, "op.") || keep[t] || keepPartTable(t, specs) {
			continue
		}
		changed := ""
		for _, c := range specs {
			if t == "op."+c.Name || strings.HasPrefix(t, "op."+c.Name+".") && len(t) == len(opTable(c)) {
				changed = c.Name
			}
		}
		if err := s.db.DropTable(t); err != nil {
			return fmt.Errorf("drop state table %q: %w", t, err)
		}
		if changed != "" {
			s.log.Info("operator changed (type, place or parameters): its state is dropped and it starts fresh", "component", changed)
		} else {
			s.log.Info("operator removed: its state is dropped", "table", t)
		}
	}
	return nil
}

func newOpRun(name string, o agent.Operator, e agent.Env) opRun {
	return opRun{
		name: name, op: o,
		in:       e.Counter("pspf_operator_records_in_total"),
		out:      e.Counter("pspf_operator_records_out_total"),
		panics:   e.Counter("pspf_operator_panics_total"),
		failures: e.Counter("pspf_operator_errors_total"),
	}
}

// recover applies the recovery contract of package checkpoint to the
// checkpoint openState loaded (ok false: none).
func (s *statefulStage) recover(cp checkpoint.Checkpoint, ok bool) error {
	sk, ok1 := s.reader.(seeker)
	tr, ok2 := s.outbox.(truncater)
	if !ok1 || !ok2 {
		return errors.New("stateful operators need a log that can seek and truncate (the buffer package's)")
	}
	if !ok {
		first, acked, _ := s.statefulCursor()
		s.next = first
		switch {
		case s.afterAck:
			// No state to rebuild (stateful_store.go): go on after the
			// last record whose outputs a checkpoint made durable.
			s.next = max(first, acked+1)
		case acked >= first:
			// Empty state, rebuilt from the oldest retained record. A
			// new stage's cursor has acked nothing in the log; one that
			// has (the state was lost: stateful_reset.go) has put the
			// outputs of the records up to its ack in the outbox already.
			s.quiet = acked
		}
	} else {
		end := cp.Outboxes[outboxName]
		if err := tr.TruncateAfter(end); err != nil {
			return fmt.Errorf("cut outbox back to %d: %w", end, err)
		}
		s.next = cp.Log
		if cp.Emitted >= cp.Log {
			s.quiet = cp.Emitted
		}
		s.log.Info("recovering from checkpoint", "checkpoint", cp.Seq, "log_next", cp.Log, "outbox_end", end)
	}
	if err := sk.Seek(s.next); err != nil {
		var re *buffer.RangeError
		if !errors.As(err, &re) {
			return fmt.Errorf("seek cursor to %d: %w", s.next, err)
		}
		// The records to replay are gone (dropped by the overflow policy or
		// by damage): resume at the nearest record that exists, and say so.
		to := min(max(s.next, re.First), re.Next)
		s.log.Warn("checkpoint position is no longer in the log; resuming at the nearest record", "position", s.next, "resume", to)
		if err := sk.Seek(to); err != nil {
			return fmt.Errorf("seek cursor to %d: %w", to, err)
		}
		s.next = to
	}
	s.acked = s.next - 1
	s.nextPub.Store(s.next)
	return nil
}

// run processes the pipeline log until ctx is done, or, once drain is
// closed, until it has caught up with the log.
func (s *statefulStage) run(ctx context.Context, drain <-chan struct{}) {
	s.buf = make([]LogRecord, 0, 512)
	for ctx.Err() == nil {
		draining := false
		select {
		case <-drain:
			draining = true
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, TimerInterval)
		if draining {
			rctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
		}
		got, err := s.reader.Read(rctx, s.buf[:0], 4<<20)
		cancel()
		if err != nil && ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			s.p.setErr(fmt.Errorf("stateful: read log: %w", err))
			s.log.Warn("stateful stage: read failed", "err", err)
			if !agent.Sleep(ctx, time.Second) {
				return
			}
			continue
		}
		if err != nil && draining && s.caughtUp() {
			return
		}
		s.mu.Lock()
		if s.failed != nil {
			s.mu.Unlock()
			return
		}
		now := s.p.deps.Now()
		if len(got) > 0 {
			s.step(ctx, got, now)
		}
		if s.failed == nil && (len(got) == 0 || now.Sub(s.lastTmr) >= TimerInterval) {
			s.timers(ctx, now)
		}
		s.mu.Unlock()
	}
}

// caughtUp reports whether every record of the pipeline log was processed.
func (s *statefulStage) caughtUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next >= s.p.plog.NextSeq()
}

// step runs one batch of log records through the stateful chain and appends
// the outputs to the outbox. The caller holds mu.
//
// During the replay after a state reset (s.quiet), a batch never straddles
// the last record whose outputs are already in the outbox, and the outputs
// of the records up to it are dropped. If the state file turned out
// damaged meanwhile, the batch's outputs are dropped too, the position
// stays, and the stage fails (stateful_reset.go).
func (s *statefulStage) step(ctx context.Context, got []LogRecord, now time.Time) {
	if q := s.quiet; q > 0 && got[0].Seq <= q && got[len(got)-1].Seq > q {
		k := 0
		for got[k].Seq <= q {
			k++
		}
		s.step(ctx, got[:k], now)
		if s.failed == nil {
			s.step(ctx, got[k:], now)
		}
		return
	}
	b := &s.batch
	b.Reset()
	b.Now = now
	s.decode(got, b)
	if s.pt != nil {
		s.stepParts(ctx, b, got[len(got)-1].Seq <= s.quiet)
	} else {
		s.chain(ctx, s.ops, b, 0)
	}
	if s.damaged() {
		return
	}
	last := got[len(got)-1].Seq
	if last <= s.quiet {
		b.Records, b.Dead = b.Records[:0], b.Dead[:0]
	}
	s.emit(ctx, b)
	s.next = last + 1
	s.nextPub.Store(s.next)
	if s.quiet > 0 && s.next > s.quiet {
		s.log.Info("replay after the state reset has passed the records whose outputs were sent before it; outputs flow again", "log_next", s.next)
		s.quiet = 0
	}
}

// timers calls every operator's OnTimer; what one emits flows through the
// operators after it. The caller holds mu.
func (s *statefulStage) timers(ctx context.Context, now time.Time) {
	s.lastTmr = now
	s.refreshStats()
	if s.damaged() {
		return
	}
	s.eachChain(func(ops []statefulOp) bool {
		s.timersOf(ctx, ops, now)
		return s.failed == nil
	})
}

// timersOf calls OnTimer of one chain's operators.
func (s *statefulStage) timersOf(ctx context.Context, ops []statefulOp, now time.Time) {
	for i := range ops {
		if ops[i].tmr == nil {
			continue
		}
		b := &s.batch
		b.Reset()
		b.Now = now
		if err := ops[i].timer(ctx, b); err != nil {
			s.log.Warn("operator timer failed", "component", ops[i].name, "err", err)
			s.p.setErr(fmt.Errorf("%s: timer: %w", ops[i].name, err))
			continue
		}
		if len(b.Records) > 0 {
			s.chain(ctx, ops, b, i+1)
		}
		if s.damaged() {
			return
		}
		if s.quiet >= s.next {
			b.Records, b.Dead = b.Records[:0], b.Dead[:0]
		}
		s.emit(ctx, b)
	}
}

// damaged reports whether the state file has met damage; the first time,
// it fails the stage. The caller holds mu.
func (s *statefulStage) damaged() bool {
	if s.failed != nil {
		return true
	}
	err := s.db.Damaged()
	if err == nil {
		return false
	}
	s.fail(fmt.Errorf("state file damaged while in use: %w", err))
	return true
}

// fail stops the stage for this generation: its state can no longer be
// trusted (damage) or committed (a failed commit). The pipeline ends
// (Pipeline.abort) so that it is started again, which reopens the state
// file: a reset if it is damaged, else the recovery from the last
// checkpoint. The caller holds mu.
func (s *statefulStage) fail(err error) {
	if s.failed != nil {
		return
	}
	s.failed = err
	s.stopped.Store(true)
	s.p.setErr(fmt.Errorf("stateful: %w", err))
	s.p.abort(fmt.Errorf("stateful: %w", err))
}

// finish calls EndOfInput on the operators that have it (the test runner's
// end of input), in order, each one's output flowing through the rest.
func (s *statefulStage) finish(ctx context.Context, now time.Time) {
	s.eachChain(func(ops []statefulOp) bool {
		for i := range ops {
			e, ok := ops[i].op.(agent.EndOfInputer)
			if !ok {
				continue
			}
			b := &s.batch
			b.Reset()
			b.Now = now
			if err := e.EndOfInput(ctx, b); err != nil {
				s.p.setErr(fmt.Errorf("%s: end of input: %w", ops[i].name, err))
				continue
			}
			s.chain(ctx, ops, b, i+1)
			s.emit(ctx, b)
		}
		return true
	})
}

func (o *statefulOp) timer(ctx context.Context, b *agent.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			o.panics.Inc()
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return o.tmr.OnTimer(ctx, b)
}

// chain runs ops[from:] over b, as Pipeline.process does for the stateless
// ones.
func (s *statefulStage) chain(ctx context.Context, ops []statefulOp, b *agent.Batch, from int) {
	for i := from; i < len(ops) && len(b.Records) > 0; i++ {
		o := &ops[i].opRun
		o.in.Add(len(b.Records))
		if err := o.call(ctx, b); err != nil {
			s.log.Warn("operator failed; batch sent to dead letters", "component", o.name, "err", err, "records", len(b.Records))
			s.p.setErr(fmt.Errorf("%s: %w", o.name, err))
			for _, r := range b.Records {
				b.Reject(r, o.name, err)
			}
			b.Records = b.Records[:0]
			return
		}
		o.out.Add(len(b.Records))
	}
}

// decode turns log payloads into b.Records, giving each its stable ID.
func (s *statefulStage) decode(got []LogRecord, b *agent.Batch) {
	for _, lr := range got {
		if cap(b.Records) > len(b.Records) {
			b.Records = b.Records[:len(b.Records)+1]
		} else {
			b.Records = append(b.Records, agent.Record{})
		}
		r := &b.Records[len(b.Records)-1]
		*r = agent.Record{Fields: r.Fields[:0], Raw: r.Raw[:0]}
		if _, err := r.UnmarshalMsg(lr.Payload); err != nil {
			b.Records = b.Records[:len(b.Records)-1]
			b.Reject(agent.Record{Raw: append([]byte(nil), lr.Payload...)}, "stateful", fmt.Errorf("log record %d: %w", lr.Seq, err))
			continue
		}
		if r.ID == "" {
			r.ID = s.p.spec.Name + ":" + strconv.FormatUint(lr.Seq, 10)
		}
	}
}

// emit appends b's records to the outbox and its dead letters to the
// dead-letter log. An append that fails is retried until ctx ends: the
// outputs of a batch must not be lost, and the position does not move past
// it meanwhile.
func (s *statefulStage) emit(ctx context.Context, b *agent.Batch) {
	if len(b.Dead) > 0 {
		s.p.deadLetter(ctx, b.Dead)
		b.Dead = b.Dead[:0]
	}
	if len(b.Records) == 0 {
		return
	}
	if s.pt != nil && s.pt.txn != nil {
		s.hold(ctx, b) // committed with the input offsets (stateful_eos.go)
		return
	}
	s.arena, s.offs, s.pays = s.arena[:0], s.offs[:0], s.pays[:0]
	for i := range b.Records {
		b.Records[i].Seq = 0
		s.offs = append(s.offs, len(s.arena))
		var err error
		if s.arena, err = b.Records[i].MarshalMsg(s.arena); err != nil {
			s.arena = s.arena[:s.offs[len(s.offs)-1]]
			s.offs = s.offs[:len(s.offs)-1]
			s.p.deadLetter(ctx, []agent.Dead{{Record: b.Records[i], Component: "stateful", Err: fmt.Errorf("encode: %w", err)}})
		}
	}
	for i, off := range s.offs {
		end := len(s.arena)
		if i+1 < len(s.offs) {
			end = s.offs[i+1]
		}
		s.pays = append(s.pays, s.arena[off:end:end])
	}
	for {
		_, err := s.outbox.Append(ctx, s.pays)
		if err == nil {
			return
		}
		var ae *buffer.AppendError
		if errors.As(err, &ae) && ae.Accepted > 0 {
			s.pays = s.pays[ae.Accepted:]
		}
		if errors.As(err, &ae) && ae.Reason != "" {
			// The outbox logs one WARN per full episode; not one per batch.
			s.log.Debug("outbox full; outputs dropped by its overflow policy", "dropped", ae.Dropped)
			return
		}
		s.p.setErr(fmt.Errorf("stateful: append to outbox: %w", err))
		s.log.Warn("stateful stage: outbox append failed; retrying", "err", err)
		if !agent.Sleep(ctx, time.Second) {
			return
		}
	}
}

// capture is the checkpoint.CaptureFunc: it pauses the stage, snapshots the
// operators, makes the outbox durable and reports the position.
func (s *statefulStage) capture(ctx context.Context) (checkpoint.Position, func(), error) {
	s.mu.Lock()
	if s.closed {
		// A checkpoint asked for as Run ends (a reload's meeting the end
		// of the sources) says closed, whichever of the store and the
		// outbox it would have met closed first.
		s.mu.Unlock()
		return checkpoint.Position{}, nil, state.ErrClosed
	}
	var serr error
	s.eachChain(func(ops []statefulOp) bool {
		for i := range ops {
			if ops[i].snap == nil {
				continue
			}
			if err := ops[i].snap.Snapshot(ctx); err != nil {
				serr = fmt.Errorf("%s: snapshot: %w", ops[i].name, err)
				return false
			}
		}
		return true
	})
	if serr == nil && s.pt != nil {
		serr = s.captureParts(ctx)
	}
	if serr != nil {
		s.mu.Unlock()
		return checkpoint.Position{}, nil, serr
	}
	end := s.outbox.NextSeq() - 1
	if end > 0 {
		if err := s.outbox.Sync(ctx, end); err != nil {
			s.mu.Unlock()
			return checkpoint.Position{}, nil, fmt.Errorf("sync outbox: %w", err)
		}
	}
	pos := checkpoint.Position{Log: s.next, Outboxes: map[string]uint64{outboxName: end}}
	if s.quiet >= s.next {
		pos.Emitted = s.quiet
	}
	return pos, s.mu.Unlock, nil
}

// checkpoint makes a checkpoint now and acks the pipeline log up to it.
func (s *statefulStage) checkpoint(ctx context.Context) error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	cp, _, err := s.mgr.Now(ctx)
	if err != nil {
		s.ckptFails.Inc()
		s.p.setErr(fmt.Errorf("checkpoint: %w", err))
		if errors.Is(err, state.ErrBroken) || errors.Is(err, state.ErrCorrupt) {
			s.mu.Lock()
			s.fail(fmt.Errorf("checkpoint: %w", err))
			s.mu.Unlock()
		}
		return fmt.Errorf("checkpoint: %w", err)
	}
	s.ckpts.Inc()
	s.publishParts()
	if !s.volatile {
		s.writeMarker()
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if cp.Log > 1 && cp.Log-1 > s.acked {
		if err := s.reader.Ack(cp.Log - 1); err != nil {
			return fmt.Errorf("checkpoint: ack log cursor: %w", err)
		}
		s.acked = cp.Log - 1
	}
	return nil
}

// interval is the checkpoint period: the pipeline file's `checkpoint.interval`
// (over the agent's defaults), else PipelineDeps.CheckpointInterval, else
// checkpoint.DefaultInterval.
func (s *statefulStage) interval() time.Duration {
	switch {
	case s.p.spec.Checkpoint.Interval > 0:
		return s.p.spec.Checkpoint.Interval
	case s.p.deps.CheckpointInterval > 0:
		return s.p.deps.CheckpointInterval
	}
	return checkpoint.DefaultInterval
}

// checkpoints checkpoints every interval and under state pressure until ctx
// ends.
func (s *statefulStage) checkpoints(ctx context.Context) {
	t := time.NewTicker(max(s.interval(), checkpoint.MinInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.db.Pressure():
		case <-s.earlyCh():
		}
		if err := s.checkpoint(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("checkpoint failed", "err", err)
			if errors.Is(err, state.ErrBroken) || errors.Is(err, state.ErrCorrupt) {
				return
			}
		}
	}
}

// close closes the state store (or hands a memory store over to the next
// generation: stateful_store.go) and the outbox (not the pipeline log).
func (s *statefulStage) close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	var errs []error
	if s.pt != nil && s.pt.txn != nil {
		s.pt.txn.Close()
	}
	if s.pt != nil && s.pt.cl != nil {
		s.pt.cl.Close()
	}
	if s.db != nil {
		// The last counters (a refusal after the last timer) stay in
		// the status and metrics of the ended generation.
		s.mu.Lock()
		s.refreshStats()
		s.mu.Unlock()
		errs = append(errs, s.closeStore())
	}
	if s.outbox != nil {
		errs = append(errs, s.outbox.Close())
	}
	return errors.Join(errs...)
}

// outboxBufferConfig is the pipeline's buffer config for its outbox, with
// sync: interval made batch. The outbox needs to be durable only at a
// checkpoint (recovery cuts it back to the last one), and the checkpoint
// waits for that fsync with the stateful stage stopped: the adaptive
// group commit would wait out sync_interval for Appends that cannot come.
// Batch mode fsyncs then, and only then.
func outboxBufferConfig(c BufferConfig) BufferConfig {
	if c.Sync == "interval" {
		c.Sync = "batch"
	}
	return c
}
