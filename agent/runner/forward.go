package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pspf/pspf-edge/agent"
)

// sinkRun is the store-and-forward loop of one sink: it reads the log from
// the sink's own cursor, writes batches, retries with backoff while the
// destination is down, sends permanently refused records to the dead letters,
// and advances the cursor only past what the destination accepted.
//
// Each round of run has three steps: fill a batch from a cursor (fill),
// deliver it (deliver), and move the cursors past it (advance). Which
// cursor a round reads, and how far, is the drain order's (liveFirst).
type sinkRun struct {
	p       *Pipeline
	name    string
	sink    agent.Sink
	reader  LogReader
	src     Log
	opts    SinkOptions
	log     *slog.Logger
	now     func() time.Time // the pipeline's clock (PipelineDeps.Now)
	isDead  bool             // this sink forwards the dead-letter log
	records *agent.Counter
	bytes   *agent.Counter
	errs    *agent.Counter
	retries *agent.Counter
	dropped *agent.Counter

	limRecords *rate.Limiter
	limBytes   *rate.Limiter

	// Health, for status: the sink's own goroutine and the sink's
	// Unreachable reports change it under hmu; status reads it.
	hmu          sync.Mutex
	online       atomic.Bool
	offlineSince atomic.Int64 // unix nanos; 0 while online
	lastErr      string       // why it is offline; "" once it delivers again
	acked        atomic.Uint64
	target       atomic.Uint64 // drain up to this sequence, once draining
	draining     chan struct{}
	wake         context.CancelFunc // cancels a Read that waits when draining starts
	wakeMu       sync.Mutex
	connected    bool

	readRecords int // records per batch: batch.max_records, or less under a rate limit
	readBytes   int // payload bytes per batch, likewise

	b  *sinkBatch // the batch of the current round
	lf *liveFirst // the drain order: which cursor the next round reads
}

func newSinkRun(p *Pipeline, c ComponentSpec, s agent.Sink, r LogReader, src Log, env agent.Env, isDead bool) *sinkRun {
	sr := &sinkRun{
		p: p, name: c.Name, sink: s, reader: r, src: src, opts: c.Sink, log: env.Logger, now: env.Now, isDead: isDead,
		records:  env.Counter("pspf_sink_records_total"),
		bytes:    env.Counter("pspf_sink_bytes_total"),
		errs:     env.Counter("pspf_sink_errors_total"),
		retries:  env.Counter("pspf_sink_retries_total"),
		dropped:  env.Counter("pspf_dropped_total", "reason", "sink_rejected"),
		draining: make(chan struct{}),
	}
	if sr.now == nil {
		sr.now = time.Now
	}
	// A rate limit is kept by reading batches of at most a tenth of a
	// second's worth and waiting for each one's tokens; the buckets start
	// empty, so that a reconnecting sink never sends a burst above the rate.
	sr.readRecords, sr.readBytes = c.Sink.Batch.MaxRecords, int(c.Sink.Batch.MaxBytes)
	now := sr.now()
	if r := c.Sink.Drain.RecordsPerSec; r > 0 {
		sr.readRecords = max(1, min(sr.readRecords, int(r/10)))
		sr.limRecords = rate.NewLimiter(rate.Limit(r), sr.readRecords)
		sr.limRecords.AllowN(now, sr.readRecords)
	}
	if b := c.Sink.Drain.BytesPerSecond; b > 0 {
		sr.readBytes = max(1, min(sr.readBytes, int(b/10)))
		sr.limBytes = rate.NewLimiter(rate.Limit(b), sr.readBytes)
		sr.limBytes.AllowN(now, sr.readBytes)
	}
	sr.b = newSinkBatch(sr.readRecords, sr.readBytes)
	sr.lf = newLiveFirst(c.Sink.Drain.Order, c.Name, s, r, src, c.Sink.Batch.MaxRecords, env.Logger)
	return sr
}

// drain tells the loop to stop once everything up to target is delivered.
func (s *sinkRun) drain(target uint64) {
	s.target.Store(target)
	close(s.draining)
	s.wakeMu.Lock()
	if s.wake != nil {
		s.wake()
	}
	s.wakeMu.Unlock()
}

func (s *sinkRun) caughtUp() bool {
	select {
	case <-s.draining:
		return s.acked.Load() >= s.target.Load()
	default:
		return false
	}
}

// run delivers the log round after round until ctx is done or, once
// draining, everything up to the target is delivered.
func (s *sinkRun) run(ctx context.Context) {
	bo := agent.Backoff{Initial: s.opts.Retry.Initial, Max: s.opts.Retry.Max}
	for !s.caughtUp() && ctx.Err() == nil {
		if !s.connected && !s.connect(ctx, &bo) {
			continue
		}
		r, live := s.lf.pick()
		if !s.fill(ctx, r, live, &bo) {
			continue
		}
		if !s.limit(ctx, s.b.len(), s.b.bytes) {
			return
		}
		assignIDs(s.p.spec.Name, s.b.recs)
		if !s.deliver(ctx, s.b.recs, &bo) {
			return
		}
		s.b.clean()
		s.advance(r, live)
	}
}

// connect connects the sink and moves its cursor past what the destination
// already holds. After a failure it waits out the backoff (or ctx) and
// reports false.
func (s *sinkRun) connect(ctx context.Context, bo *agent.Backoff) bool {
	if err := s.sink.Connect(ctx); err != nil {
		if ctx.Err() == nil {
			s.p.connectFailed(err)
			s.failDest(fmt.Errorf("connect: %w", err))
			agent.Sleep(ctx, bo.Next())
		}
		return false
	}
	if err := s.skipToCursor(ctx); err != nil {
		if ctx.Err() == nil {
			s.failDest(err)
			agent.Sleep(ctx, bo.Next())
		}
		return false
	}
	s.connected = true
	s.p.connected(s)
	s.setOnline()
	bo.Reset()
	return true
}

// fill reads the round's batch from r (the live cursor if live) and
// decodes it. It reports false when the round has nothing to deliver: the
// read failed (it waits out the backoff unless the read was only woken), or
// the main cursor has no backlog left in live mode (live mode ends).
func (s *sinkRun) fill(ctx context.Context, r LogReader, live bool, bo *agent.Backoff) bool {
	s.b.reset()
	if err := s.read(ctx, r, live); err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			s.fail(fmt.Errorf("read log: %w", err))
			agent.Sleep(ctx, bo.Next())
		}
		return false
	}
	if s.lf.backlogOnly(live) && !s.b.cut(s.lf.start) {
		s.endLive()
		return false
	}
	if s.lf.topUp() {
		s.topUp(ctx, r)
	}
	if bad := s.b.decode(s.name); len(bad) > 0 && !s.isDead {
		s.p.deadLetter(context.Background(), bad)
		s.fail(fmt.Errorf("%d log records did not decode", len(bad)))
	}
	return true
}

// read waits for the first records of the batch on r. Until draining
// starts it waits as long as it takes (and drain wakes it); while
// draining, never long for records that will not come.
func (s *sinkRun) read(ctx context.Context, r LogReader, live bool) error {
	var rctx context.Context
	var cancel context.CancelFunc
	select {
	case <-s.draining:
		rctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	default:
		rctx, cancel = context.WithCancel(ctx)
		s.wakeMu.Lock()
		s.wake = cancel
		s.wakeMu.Unlock()
		select {
		case <-s.draining: // drain started before wake was set
			cancel()
		default:
		}
	}
	defer cancel()
	_, err := s.b.read(rctx, r, s.lf.readLimit(s.readRecords, live), s.readBytes)
	return err
}

// topUp reads more into the batch while more is waiting in the log and the
// batch has room: a Read returns what one pass over the files gave, and a
// backlog should drain in full batches.
func (s *sinkRun) topUp(ctx context.Context, r LogReader) {
	for s.b.len() < s.readRecords && s.b.bytes < s.readBytes && s.src.NextSeq() > s.b.last()+1 {
		n, err := s.b.read(ctx, r, s.readRecords-s.b.len(), s.readBytes-s.b.bytes)
		if err != nil || n == 0 {
			return
		}
	}
}

// advance moves cursor r (the live one if live) past the batch just
// delivered, and the drain order with it.
func (s *sinkRun) advance(r LogReader, live bool) {
	last := s.b.last()
	if err := r.Ack(last); err != nil {
		s.fail(fmt.Errorf("ack cursor: %w", err))
	}
	acked, err := s.lf.delivered(last, live)
	if err != nil {
		s.fail(err)
	}
	if !live {
		s.acked.Store(acked)
	}
}

// endLive ends live mode when the main cursor has no backlog left.
func (s *sinkRun) endLive() {
	acked, err := s.lf.end(s.acked.Load())
	if err != nil {
		s.fail(err)
	}
	s.acked.Store(acked)
}

// limit waits for the batch's tokens: its records, and its payload bytes
// (the records as stored in the log, the closest measure of what goes on the
// wire that does not depend on the sink's encoding). A batch larger than a
// bucket (one record above the byte burst) takes its tokens in bucket-sized
// steps, so that it is still paid for in full.
func (s *sinkRun) limit(ctx context.Context, records, bytes int) bool {
	if s.limRecords != nil && !waitN(ctx, s.limRecords, records, s.now) {
		return false
	}
	if s.limBytes != nil && !waitN(ctx, s.limBytes, bytes, s.now) {
		return false
	}
	return true
}

// waitN takes n tokens from l, in steps of at most its burst, waiting for
// each step by the clock now.
func waitN(ctx context.Context, l *rate.Limiter, n int, now func() time.Time) bool {
	for n > 0 {
		step := min(n, l.Burst())
		t := now()
		r := l.ReserveN(t, step) // step <= burst: always possible
		if !agent.Sleep(ctx, r.DelayFrom(t)) {
			r.CancelAt(now())
			return false
		}
		n -= step
	}
	return true
}

// deliver writes recs until the destination accepts them or refuses them for
// good; it reports false only when ctx ended first.
func (s *sinkRun) deliver(ctx context.Context, recs []agent.Record, bo *agent.Backoff) bool {
	if len(recs) == 0 {
		return true
	}
	for {
		err := s.sink.Write(ctx, recs)
		if err == nil {
			s.done(recs)
			bo.Reset()
			if !s.online.Load() {
				s.lf.offline() // the sink reported an outage during the Write
			}
			s.setOnline()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		var rej *agent.RejectedError
		switch {
		case errors.As(err, &rej):
			s.reject(ctx, recs, rej)
			s.setOnline()
			return true
		case agent.IsPermanent(err):
			s.reject(ctx, recs, nil, err)
			s.setOnline()
			return true
		}
		s.failDest(fmt.Errorf("write: %w", err))
		s.lf.offline()
		s.retries.Inc()
		wait := bo.Next()
		if d, ok := agent.RetryAfter(err); ok {
			// The destination said when to come back; a fleet that obeys it
			// does not hammer a server that is shedding load.
			wait = min(max(d, 0), maxRetryAfter)
		}
		if !agent.Sleep(ctx, wait) {
			return false
		}
	}
}

// maxRetryAfter caps a destination's Retry-After, so that a bogus value
// cannot park a sink for days.
const maxRetryAfter = 15 * time.Minute

// ownCursor returns s as an agent.CursorOwner if it keeps its own cursor.
func ownCursor(s agent.Sink) (agent.CursorOwner, bool) {
	co, ok := s.(agent.CursorOwner)
	if !ok {
		return nil, false
	}
	if o, ok := s.(interface{ OwnsCursor() bool }); ok && !o.OwnsCursor() {
		return nil, false
	}
	return co, true
}

// skipToCursor asks a CursorOwner sink where the destination's cursor is and
// moves the reader past what the destination already holds.
func (s *sinkRun) skipToCursor(ctx context.Context) error {
	co, ok := ownCursor(s.sink)
	if !ok {
		return nil
	}
	seq, ok, err := co.Cursor(ctx)
	if err != nil {
		return fmt.Errorf("load cursor: %w", err)
	}
	if !ok || seq <= s.acked.Load() {
		return nil
	}
	if next := s.src.NextSeq(); seq >= next {
		// The destination is ahead of this log (a log wiped or restored
		// from an older copy): skip what exists, and say so.
		s.log.Warn("destination cursor is past the end of the log", "cursor", seq, "log_next", next)
		seq = next - 1
		if seq == 0 {
			return nil
		}
	}
	if err := s.reader.Ack(seq); err != nil {
		return fmt.Errorf("skip to cursor %d: %w", seq, err)
	}
	s.log.Info("resuming after the destination's cursor", "cursor", seq)
	s.acked.Store(seq)
	return nil
}

// done counts a batch the destination accepted in full.
func (s *sinkRun) done(recs []agent.Record) {
	s.records.Add(len(recs))
	s.bytes.AddInt64(int64(s.b.payloadBytes(len(recs))))
}

// reject dead-letters the refused records: those listed in rej, or all of
// them with err.
func (s *sinkRun) reject(ctx context.Context, recs []agent.Record, rej *agent.RejectedError, err ...error) {
	var dead []agent.Dead
	if rej != nil {
		accepted := s.b.payloadBytes(len(recs))
		for i, idx := range rej.Index {
			if idx >= 0 && idx < len(recs) {
				dead = append(dead, agent.Dead{Record: recs[idx], Component: s.name, Err: rej.Errs[min(i, len(rej.Errs)-1)]})
				if idx < len(s.b.sizes) {
					accepted -= s.b.sizes[idx]
				}
			}
		}
		s.records.Add(len(recs) - len(dead))
		s.bytes.AddInt64(int64(accepted))
	} else {
		for _, r := range recs {
			dead = append(dead, agent.Dead{Record: r, Component: s.name, Err: err[0]})
		}
	}
	s.dropped.Add(len(dead))
	s.log.Warn("destination refused records for good; sent to dead letters", "records", len(dead), "err", dead[0].Err)
	if s.isDead {
		return // a dead-letter sink that refuses: the dead-letter log keeps them, counted
	}
	s.p.deadLetter(ctx, dead)
}

// fail counts and reports an error of the sink's own work (reading the
// log, moving its cursor): the pipeline's last error until the sink
// delivers again.
func (s *sinkRun) fail(err error) {
	s.errs.Inc()
	err = fmt.Errorf("%s: %w", s.name, err)
	s.p.setErrOf(s.owner(), err)
	s.log.Warn("sink error", "err", err)
}

// failDest counts a failed connect or write: the destination is offline.
func (s *sinkRun) failDest(err error) {
	s.errs.Inc()
	s.offline(err)
}

// offline marks the destination unreachable, or refusing for now, with err
// as the reason. The first call of an outage stamps offline_since and logs
// one WARN; later ones only replace last_error (and log at DEBUG), so that
// an outage of hours logs one line, not one per retry. It is safe from any
// goroutine: a sink's Unreachable calls it while a Write waits.
func (s *sinkRun) offline(err error) {
	err = fmt.Errorf("%s: %w", s.name, err)
	s.hmu.Lock()
	first := s.online.Load() || s.offlineSince.Load() == 0
	s.online.Store(false)
	if first {
		s.offlineSince.Store(s.now().UnixNano())
	}
	s.lastErr = s.p.deps.Secrets.Text(err.Error())
	s.hmu.Unlock()
	s.p.setErrOf(s.owner(), err)
	if first {
		s.log.Warn("sink offline; retrying with backoff until it accepts again", "err", err)
	} else {
		s.log.Debug("sink still offline", "err", err)
	}
}

// setOnline marks the destination as answering: it clears offline_since
// and the sink's last error, in the sink's status and as the pipeline's.
func (s *sinkRun) setOnline() {
	s.hmu.Lock()
	was := s.online.Swap(true)
	since := s.offlineSince.Swap(0)
	s.lastErr = ""
	s.hmu.Unlock()
	s.p.clearErrOf(s.owner())
	if !was && since != 0 {
		s.log.Info("sink online again", "offline_for", s.now().Sub(time.Unix(0, since)).Round(time.Millisecond))
	}
}

// owner names the sink as the source of the pipeline's last error.
func (s *sinkRun) owner() string { return "sink " + s.name }

func (s *sinkRun) close(ctx context.Context) error {
	var errs []error
	if f, ok := s.sink.(agent.Flusher); ok && s.connected {
		if err := f.Flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: flush: %w", s.name, err))
		}
	}
	if err := s.sink.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("%s: close: %w", s.name, err))
	}
	return errors.Join(errs...)
}
