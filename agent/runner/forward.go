package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
type sinkRun struct {
	p       *Pipeline
	name    string
	sink    agent.Sink
	reader  LogReader
	src     Log
	opts    SinkOptions
	log     *slog.Logger
	isDead  bool // this sink forwards the dead-letter log
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

	readRecords int // records per read: the batch size, or less under a rate limit
	readBytes   int // payload bytes per read, likewise

	// The batch being delivered: its records, reused from round to round,
	// and the log payload size of each (for pspf_sink_bytes_total).
	recs  []agent.Record
	sizes []int

	// live_first (see livefirst.go): a second
	// cursor that serves new records while the main one drains the backlog.
	live       LogReader // nil unless drain.order is live_first
	inLive     bool      // the backlog below liveStart is being drained behind live data
	liveStart  uint64    // first sequence the live cursor serves
	liveNext   uint64    // next sequence the live cursor will read
	mainNext   uint64    // next sequence the main cursor will read; 0: unknown
	wasOffline bool      // the destination was unreachable (or the agent restarted) since the last live_first decision
}

func newSinkRun(p *Pipeline, c ComponentSpec, s agent.Sink, r LogReader, src Log, env agent.Env, isDead bool) *sinkRun {
	sr := &sinkRun{
		p: p, name: c.Name, sink: s, reader: r, src: src, opts: c.Sink, log: env.Logger, isDead: isDead,
		records:  env.Counter("pspf_sink_records_total"),
		bytes:    env.Counter("pspf_sink_bytes_total"),
		errs:     env.Counter("pspf_sink_errors_total"),
		retries:  env.Counter("pspf_sink_retries_total"),
		dropped:  env.Counter("pspf_dropped_total", "reason", "sink_rejected"),
		draining: make(chan struct{}),
	}
	// A rate limit is kept by reading batches of at most a tenth of a
	// second's worth and waiting for each one's tokens; the buckets start
	// empty, so that a reconnecting sink never sends a burst above the rate.
	sr.readRecords, sr.readBytes = c.Sink.Batch.MaxRecords, int(c.Sink.Batch.MaxBytes)
	now := time.Now()
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
	if c.Sink.Drain.Order == "live_first" {
		sr.setupLive(c)
	}
	sr.wasOffline = true // a start is the end of an outage of unknown length
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

func (s *sinkRun) run(ctx context.Context) {
	bo := agent.Backoff{Initial: s.opts.Retry.Initial, Max: s.opts.Retry.Max}
	buf := make([]LogRecord, 0, s.readRecords)
	for !s.caughtUp() {
		if !s.connected {
			if err := s.sink.Connect(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.p.connectFailed(err)
				s.failDest(fmt.Errorf("connect: %w", err))
				if !agent.Sleep(ctx, bo.Next()) {
					return
				}
				continue
			}
			if err := s.skipToCursor(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.failDest(err)
				if !agent.Sleep(ctx, bo.Next()) {
					return
				}
				continue
			}
			s.connected = true
			s.p.connected(s)
			s.setOnline()
			bo.Reset()
		}
		r, live := s.pick()
		got, err := s.read(ctx, r, buf, live)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				continue
			}
			s.fail(fmt.Errorf("read log: %w", err))
			if !agent.Sleep(ctx, bo.Next()) {
				return
			}
			continue
		}
		if s.inLive && !live {
			// The main cursor serves only the backlog below liveStart.
			n := 0
			for n < len(got) && got[n].Seq < s.liveStart {
				n++
			}
			if n == 0 {
				s.endLive()
				continue
			}
			got = got[:n]
		}
		s.recs, s.sizes = s.recs[:0], s.sizes[:0]
		if err := s.decode(got); err != nil {
			s.fail(err)
		}
		n, size := len(got), payloadBytes(got)
		last := got[len(got)-1].Seq
		if !s.inLive {
			// A read returns what one pass over the files gave; while more
			// is already waiting, top the batch up so that a backlog drains
			// in full batches.
			for n < s.readRecords && size < s.readBytes && s.src.NextSeq() > last+1 {
				more, err := r.Read(ctx, buf[:0:s.readRecords-n], s.readBytes-size)
				// A LogReader need not move on by itself before Ack (the
				// test MemLog reads from its ack): keep only what is new.
				for len(more) > 0 && more[0].Seq <= last {
					more = more[1:]
				}
				if err != nil || len(more) == 0 {
					break
				}
				if err := s.decode(more); err != nil {
					s.fail(err)
				}
				n, size, last = n+len(more), size+payloadBytes(more), more[len(more)-1].Seq
			}
		}
		if !s.limit(ctx, n, size) {
			return
		}
		assignIDs(s.p.spec.Name, s.recs)
		if !s.deliver(ctx, s.recs, &bo) {
			return
		}
		s.clean()
		if err := r.Ack(last); err != nil {
			s.fail(fmt.Errorf("ack cursor: %w", err))
		}
		if live {
			s.liveNext = last + 1
			continue
		}
		s.mainNext = last + 1
		s.acked.Store(last)
		s.followMain(last)
		if s.inLive && s.mainNext >= s.liveStart {
			s.endLive()
		} else if !s.inLive {
			s.maybeStartLive()
		}
	}
}

// read waits for records on r. Until draining starts it waits as long as it
// takes (and drain wakes it); while draining, never long for records that
// will not come.
func (s *sinkRun) read(ctx context.Context, r LogReader, buf []LogRecord, live bool) ([]LogRecord, error) {
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
	buf = buf[:0:s.readRecords]
	if s.inLive && !live && s.mainNext > 0 && s.liveStart > s.mainNext {
		// Do not read far past the backlog: what lies beyond is the live
		// cursor's.
		buf = buf[:0:max(1, min(uint64(s.readRecords), s.liveStart-s.mainNext))]
	}
	return r.Read(rctx, buf, s.readBytes)
}

// decode appends the records of got to s.recs, and their payload sizes to
// s.sizes, reusing what earlier rounds left there. A payload that does not
// decode is dead-lettered with its sequence (it can only come from damage
// that slipped past the CRC, or from a newer agent's format).
func (s *sinkRun) decode(got []LogRecord) error {
	var bad []agent.Dead
	a := agent.NewStringArena(payloadBytes(got))
	for _, lr := range got {
		if cap(s.recs) > len(s.recs) {
			s.recs = s.recs[:len(s.recs)+1]
		} else {
			s.recs = append(s.recs, agent.Record{})
		}
		r := &s.recs[len(s.recs)-1]
		*r = agent.Record{Fields: r.Fields[:0], Raw: r.Raw[:0]}
		if _, err := r.UnmarshalShared(lr.Payload, a); err != nil {
			bad = append(bad, agent.Dead{Record: agent.Record{Raw: append([]byte(nil), lr.Payload...)}, Component: s.name, Err: fmt.Errorf("log record %d: %w", lr.Seq, err)})
			s.recs = s.recs[:len(s.recs)-1]
			continue
		}
		r.Seq = lr.Seq
		s.sizes = append(s.sizes, len(lr.Payload))
	}
	if len(bad) > 0 && !s.isDead {
		s.p.deadLetter(context.Background(), bad)
		return fmt.Errorf("%d log records did not decode", len(bad))
	}
	return nil
}

// keepRaw is the largest raw payload buffer a delivered record keeps for
// the next batch in any case; a larger one only if this batch used at least
// half of it.
const keepRaw = 4 << 10

// clean lets go of what the batch just delivered held: the records' strings
// (cut from the batch's arena: one left behind keeps the whole arena) and
// the raw payload buffers this batch did not fill (see keepRaw), so that
// the buffers kept add up to at most about twice a batch: batch.max_bytes
// of payload plus one record is what a sink holds between the log and its
// Write, and a burst of large records does not stay behind in buffers that
// later batches of small ones reuse. The records' field slices stay.
func (s *sinkRun) clean() {
	for i := range s.recs {
		r := &s.recs[i]
		clear(r.Fields)
		raw := r.Raw[:0]
		if c := cap(raw); c > keepRaw && c > 2*len(r.Raw) {
			raw = nil
		}
		*r = agent.Record{Fields: r.Fields[:0], Raw: raw}
	}
}

// assignIDs gives every record of recs that has no ID its stable ID,
// "<pipeline>:<seq>". The IDs are slices of one string made for the whole
// batch: one allocation per batch rather than one per record. A sink that
// keeps an ID past Write keeps that string alive, which is why sinks copy
// what they keep.
func assignIDs(pipeline string, recs []agent.Record) {
	var num [20]byte
	n := 0
	for i := range recs {
		if recs[i].ID == "" {
			n += len(pipeline) + 1 + len(strconv.AppendUint(num[:0], recs[i].Seq, 10))
		}
	}
	if n == 0 {
		return
	}
	var b strings.Builder
	b.Grow(n)
	for i := range recs {
		if recs[i].ID == "" {
			b.WriteString(pipeline)
			b.WriteByte(':')
			b.Write(strconv.AppendUint(num[:0], recs[i].Seq, 10))
		}
	}
	all, off := b.String(), 0
	for i := range recs {
		if recs[i].ID == "" {
			end := off + len(pipeline) + 1 + len(strconv.AppendUint(num[:0], recs[i].Seq, 10))
			recs[i].ID = all[off:end]
			off = end
		}
	}
}

// limit waits for the batch's tokens: its records, and its payload bytes
// (the records as stored in the log, the closest measure of what goes on the
// wire that does not depend on the sink's encoding). A batch larger than a
// bucket (one record above the byte burst) takes its tokens in bucket-sized
// steps, so that it is still paid for in full.
func (s *sinkRun) limit(ctx context.Context, records, bytes int) bool {
	if s.limRecords != nil && !waitN(ctx, s.limRecords, records) {
		return false
	}
	if s.limBytes != nil && !waitN(ctx, s.limBytes, bytes) {
		return false
	}
	return true
}

func payloadBytes(got []LogRecord) int {
	n := 0
	for _, r := range got {
		n += len(r.Payload)
	}
	return n
}

func waitN(ctx context.Context, l *rate.Limiter, n int) bool {
	for n > 0 {
		step := min(n, l.Burst())
		if l.WaitN(ctx, step) != nil {
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
				s.wasOffline = true // the sink reported an outage during the Write
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
		s.wasOffline = true
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
	s.bytes.AddInt64(int64(s.batchBytes(len(recs))))
}

// batchBytes returns the log payload bytes of the first n records of the
// batch being delivered: what pspf_sink_bytes_total counts, the same measure
// as drain.bytes_per_second.
func (s *sinkRun) batchBytes(n int) int {
	t := 0
	for _, sz := range s.sizes[:min(n, len(s.sizes))] {
		t += sz
	}
	return t
}

// reject dead-letters the refused records: those listed in rej, or all of
// them with err.
func (s *sinkRun) reject(ctx context.Context, recs []agent.Record, rej *agent.RejectedError, err ...error) {
	var dead []agent.Dead
	if rej != nil {
		accepted := s.batchBytes(len(recs))
		for i, idx := range rej.Index {
			if idx >= 0 && idx < len(recs) {
				dead = append(dead, agent.Dead{Record: recs[idx], Component: s.name, Err: rej.Errs[min(i, len(rej.Errs)-1)]})
				if idx < len(s.sizes) {
					accepted -= s.sizes[idx]
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
		s.offlineSince.Store(time.Now().UnixNano())
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
		s.log.Info("sink online again", "offline_for", time.Since(time.Unix(0, since)).Round(time.Millisecond))
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
