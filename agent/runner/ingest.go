package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/buffer"
)

// pending is a batch appended to the log, waiting for the fsync that makes it
// durable before its source is acked.
type pending struct {
	last uint64 // in the pipeline log; 0: nothing appended there
	dead uint64 // in the dead-letter log; 0: nothing appended there
	ack  agent.AckFunc
	n    int
}

// sourceRun drives one source: read, run the stateless chain, append to the
// log, hand the ack to the committer.
type sourceRun struct {
	p       *Pipeline
	name    string
	src     agent.Source
	log     *slog.Logger
	records *agent.Counter
	errors  *agent.Counter
	nacks   *agent.Counter
	// failingSince is when the current episode of failed connects or reads
	// began (zero: none); failures counts its attempts. Only run's
	// goroutine touches them.
	failingSince time.Time
	failures     int
	ops          []opRun // the stateless operators; this source's own instances
	batch        agent.Batch
	// fields is the batch's field storage, reused batch after batch (see
	// presize); perRecord is the most fields a record has had after the
	// stateless chain, which sizes it.
	fields    []agent.Field
	perRecord int
	arena     []byte    // the chunk's encoding; nil between chunks
	arenas    sync.Pool // of *[]byte: arena between chunks (see clean)
	offs      []int
	pays      [][]byte
}

func newSourceRun(p *Pipeline, c ComponentSpec, s agent.Source, env agent.Env) *sourceRun {
	return &sourceRun{
		p: p, name: c.Name, src: s, log: env.Logger,
		records: env.Counter("pspf_source_records_total"),
		errors:  env.Counter("pspf_source_errors_total"),
		nacks:   env.Counter("pspf_source_nacks_total"),
	}
}

// run reads until ctx is done or the source ends. Once Read has returned a
// batch, the batch is finished (appended and handed on, or nacked) even if ctx
// ends meanwhile: the source stops, but nothing it handed over is abandoned.
func (s *sourceRun) run(ctx context.Context, commits chan<- pending) {
	bo := agent.Backoff{Initial: 200 * time.Millisecond, Max: 30 * time.Second}
	for {
		err := s.src.Connect(ctx)
		if err == nil {
			s.p.connected(s)
			s.recovered("connected")
			break
		}
		s.p.connectFailed(err)
		d := bo.Next()
		s.failed(fmt.Errorf("%s: connect: %w", s.name, err), "source connect failed; retrying with backoff", d)
		if !agent.Sleep(ctx, d) {
			return
		}
	}
	bo.Reset()
	finish := context.WithoutCancel(ctx)
	for ctx.Err() == nil {
		recs, ack, err := s.src.Read(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				if len(recs) == 0 {
					return
				}
			} else {
				d := bo.Next()
				s.failed(fmt.Errorf("%s: read: %w", s.name, err), "source read failed; retrying with backoff", d)
				if !agent.Sleep(ctx, d) {
					return
				}
				continue
			}
		}
		bo.Reset()
		s.recovered("reading again")
		s.records.Add(len(recs))
		s.handle(finish, recs, ack, commits)
		if err != nil { // io.EOF or ctx done with a last batch
			return
		}
	}
}

// failed counts a failed connect or read and makes err the pipeline's last
// error. The first failure of an episode logs one WARN; the retries after
// it log at DEBUG, so that a source down for hours writes one line, not one
// per attempt (recovered ends the episode).
func (s *sourceRun) failed(err error, msg string, retryIn time.Duration) {
	s.errors.Inc()
	s.p.setErrOf(s.owner(), err)
	if s.failingSince.IsZero() {
		s.failingSince = s.p.deps.Now()
		s.log.Warn(msg, "err", err, "retry_in", retryIn.Round(time.Millisecond))
	} else {
		s.log.Debug(msg, "err", err, "retry_in", retryIn.Round(time.Millisecond))
	}
	s.failures++
}

// recovered ends a failure episode: one INFO line with its length and the
// attempts it took, and the pipeline's last error cleared if it was ours.
func (s *sourceRun) recovered(what string) {
	if s.failingSince.IsZero() {
		return
	}
	s.log.Info("source "+what+" after failures", "failed_for", s.p.deps.Now().Sub(s.failingSince).Round(time.Millisecond), "attempts", s.failures)
	s.failingSince, s.failures = time.Time{}, 0
	s.p.clearErrOf(s.owner())
}

// owner names the source as the origin of the pipeline's last error.
func (s *sourceRun) owner() string { return "source " + s.name }

// handle runs a batch the source read through the stateless chain and into
// the log, a chunk of at most about ingestChunkBytes at a time, and hands
// its ack to the committer (or acks or nacks it here when nothing of it
// reached the log). The batch is acked once, as a whole.
func (s *sourceRun) handle(ctx context.Context, recs []agent.Record, ack agent.AckFunc, commits chan<- pending) {
	now := s.p.deps.Now()
	var last, dead uint64
	n := 0
	for len(recs) > 0 {
		k := chunkLen(recs, ingestChunkBytes)
		l, d, m, err := s.chunk(ctx, recs[:k], now)
		dead = max(dead, d)
		if err != nil {
			s.nack(ctx, ack, err)
			return
		}
		last, n, recs = max(last, l), n+m, recs[k:]
	}
	if n == 0 {
		if dead > 0 {
			commits <- pending{dead: dead, ack: ack}
		} else if ack != nil {
			ack(ctx, nil)
		}
		return
	}
	if a, ok := s.src.(agent.Appender); ok {
		a.Appended() // before the send: it may wait behind earlier fsyncs
	}
	commits <- pending{last: last, dead: dead, ack: ack, n: n}
}

// ingestChunkBytes is about the most record bytes (see recordBytes) that go
// through the stateless chain and into the log at once. The chain's output
// (decoded fields, copies of the payloads' strings) and its encoding for the
// log are copies of what the source holds: chunking bounds them whatever
// the size of the source's batch, while a batch of small messages is one
// chunk.
const ingestChunkBytes = 512 << 10

// chunkLen returns how many records from the front of recs make a chunk:
// at least one, and no more than fit in max bytes.
func chunkLen(recs []agent.Record, max int) int {
	size := 0
	for i := range recs {
		size += recordBytes(&recs[i])
		if size > max && i > 0 {
			return i
		}
	}
	return len(recs)
}

// recordBytes estimates the memory a record's data takes: its strings and
// bytes, and a word or two per field.
func recordBytes(r *agent.Record) int {
	n := len(r.Raw) + len(r.ID) + len(r.Key) + len(r.Source)
	for i := range r.Fields {
		f := &r.Fields[i]
		n += 16 + len(f.Name) + len(f.Str) + len(f.Bytes)
	}
	return n
}

// chunk runs recs through the stateless chain, appends the dead letters and
// the output to the logs, and returns the last sequences appended there (0:
// none) and the count of records appended to the pipeline log (records the
// log's overflow policy dropped are not an error: they were counted there).
// It lets go of every copy it made before it returns.
func (s *sourceRun) chunk(ctx context.Context, recs []agent.Record, now time.Time) (last, dead uint64, n int, err error) {
	b := &s.batch
	b.Reset()
	b.Records = append(b.Records, recs...)
	used := s.presize(b.Records)
	defer s.clean(used, b.Records) // operators may shrink, grow or replace b.Records
	b.Now = now
	s.p.process(ctx, s.ops, b)
	for i := range b.Records {
		s.perRecord = max(s.perRecord, len(b.Records[i].Fields))
	}
	// Dead letters are appended here and made durable by the committer,
	// with the batch: an fsync per batch on this goroutine stalled intake.
	dead = s.p.appendDead(ctx, b.Dead)
	if len(b.Records) == 0 {
		return 0, dead, 0, nil
	}
	pays, err := s.encode(b.Records)
	if err != nil {
		return 0, dead, 0, err
	}
	last, err = s.p.plog.Append(ctx, pays)
	if ae := (*buffer.AppendError)(nil); errors.As(err, &ae) && ae.Reason != "" {
		// The log is full and its policy (drop_newest, or a full disk)
		// dropped the rest of the chunk: counted and logged there. The
		// source is acked for them too, or it would send them again, to
		// be refused and counted again. last covers the part stored.
		return last, dead, ae.Accepted, nil
	}
	if err != nil {
		return 0, dead, 0, fmt.Errorf("append to log: %w", err)
	}
	if f := s.p.deps.Appended; f != nil {
		f()
	}
	return last, dead, len(pays), nil
}

// clean lets go of what the chunk just handled: the records (in, as they
// went into the chain, and what came out of it), dead letters and payload
// slices left in the reused slices (their strings and payloads would
// otherwise stay reachable until a later batch overwrote them), and the
// first used fields of the presized storage. The encoding buffer goes back
// to the source's pool: the next chunk takes it under load, and the
// collector frees it once the source has been idle for two collections, so
// a burst of large payloads leaves no memory behind.
func (s *sourceRun) clean(used int, in []agent.Record) {
	b := &s.batch
	clear(s.fields[:used])
	clear(in)
	clear(b.Records)
	clear(b.Dead)
	clear(s.pays)
	if s.arena != nil {
		a := s.arena[:0]
		s.arena = nil
		s.arenas.Put(&a)
	}
}

// maxPresized bounds the reused field storage of a source (in fields, 80
// bytes each): a batch that would need more gets none, and its operators
// allocate as they did before.
const maxPresized = 1 << 16

// presize moves the records' fields into the runner's reused storage, each
// with room for as many fields as a record has had after the stateless chain,
// plus two: a decoder then fills it instead of allocating a slice per record.
// It returns how much of the storage is in use. The storage is the batch's
// until handle returns: operators do not keep records (or their Fields)
// across Process calls, the log append and the dead-letter encoding copy
// them, and the source's own records are left as they were.
func (s *sourceRun) presize(recs []agent.Record) int {
	if s.perRecord == 0 {
		return 0 // the first batch shows how many fields a record gets
	}
	per := s.perRecord + 2
	need := len(recs) * per
	if need > maxPresized {
		return 0
	}
	if cap(s.fields) < need {
		s.fields = make([]agent.Field, need)
	}
	for i := range recs {
		r := &recs[i]
		f := s.fields[i*per : i*per : (i+1)*per]
		r.Fields = append(f, r.Fields...)
	}
	return need
}

func (s *sourceRun) nack(ctx context.Context, ack agent.AckFunc, err error) {
	s.nacks.Inc()
	s.p.setErr(fmt.Errorf("%s: %w", s.name, err))
	s.log.Warn("batch not accepted; the source will redeliver it", "err", err)
	if ack != nil {
		ack(ctx, err)
	}
}

// encode marshals the records into one reused arena and returns a payload
// slice per record; no allocation per record once the arena has grown.
func (s *sourceRun) encode(recs []agent.Record) ([][]byte, error) {
	if s.arena == nil {
		if p, ok := s.arenas.Get().(*[]byte); ok {
			s.arena = *p
		}
		// Sized once for the chunk, not grown by doubling, a copy at each
		// step.
		n := 0
		for i := range recs {
			n += 32 + recordBytes(&recs[i])
		}
		s.arena = slices.Grow(s.arena, n)
	}
	s.arena = s.arena[:0]
	s.offs = s.offs[:0]
	for i := range recs {
		var err error
		s.offs = append(s.offs, len(s.arena))
		if s.arena, err = recs[i].MarshalMsg(s.arena); err != nil {
			return nil, fmt.Errorf("encode record: %w", err)
		}
	}
	s.pays = s.pays[:0]
	for i, off := range s.offs {
		end := len(s.arena)
		if i+1 < len(s.offs) {
			end = s.offs[i+1]
		}
		s.pays = append(s.pays, s.arena[off:end:end])
	}
	return s.pays, nil
}

// commit is the group commit: it collects every appended batch that is
// waiting, makes the log durable up to the last one with one Sync, then acks
// them all, in order. It ends when commits is closed and drained.
func (p *Pipeline) commit(commits <-chan pending) {
	ctx := context.Background()
	var group []pending
	for first := range commits {
		group = append(group[:0], first)
	more:
		for {
			select {
			case pd, ok := <-commits:
				if !ok {
					break more
				}
				group = append(group, pd)
			default:
				break more
			}
		}
		var last, dead uint64
		for _, pd := range group {
			last, dead = max(last, pd.last), max(dead, pd.dead)
		}
		var err error
		if last > 0 {
			if err = p.plog.Sync(ctx, last); err != nil {
				p.setErr(fmt.Errorf("log sync: %w", err))
				p.log.Error("log sync failed; sources will redeliver", "err", err)
			}
		}
		// A failed dead-letter fsync does not nack: redelivery would only
		// bring the same bad records back. It is logged and in the status.
		if dead > 0 {
			if derr := p.deadLog.Sync(ctx, dead); derr != nil {
				p.setErr(fmt.Errorf("dead letters: %w", derr))
				p.log.Error("dead-letter log sync failed", "err", derr)
			}
		}
		for _, pd := range group {
			if pd.ack != nil {
				pd.ack(ctx, err)
			}
		}
		// The acks hold their batches (the source's messages) until they
		// are overwritten: an idle pipeline must not keep its last ones.
		clear(group)
	}
}
