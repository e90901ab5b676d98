package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// The fields a dead letter carries besides the record's own: why it was
// refused and by which component (see Pipeline.deadLetter).
const (
	DeadErrorField     = "_error"
	DeadComponentField = "_component"
)

// DeadLetterBufferConfig is the buffer config of every pipeline's dead-letter
// log: 64 MiB, the oldest dropped beyond that, fsync per batch.
func DeadLetterBufferConfig() BufferConfig {
	c := DefaultBufferConfig()
	c.MaxBytes = 64 << 20
	c.Overflow = "drop_oldest"
	c.Sync = "batch"
	return c
}

// DecodeDead decodes a dead-letter log payload into r, without the fields
// the dead-letter log added, and returns the component that refused the
// record and why.
func DecodeDead(payload []byte, r *agent.Record) (component, reason string, err error) {
	*r = agent.Record{Fields: r.Fields[:0]}
	if _, err := r.UnmarshalMsg(payload); err != nil {
		return "", "", err
	}
	keep := r.Fields[:0]
	for _, f := range r.Fields {
		switch {
		case f.Name == DeadComponentField && f.Kind == agent.KindString:
			component = f.Str
		case f.Name == DeadErrorField && f.Kind == agent.KindString:
			reason = f.Str
		default:
			keep = append(keep, f)
		}
	}
	r.Fields = keep
	return component, reason, nil
}

// RedriveOptions says which dead letters Redrive sends, and how.
type RedriveOptions struct {
	// Pipeline names the pipeline, for the IDs of dead letters that have
	// none (refused before a sink saw them): "<pipeline>:dead:<seq>".
	Pipeline string
	// Sink is the name of the sink the dead letters go through.
	Sink string
	// All sends every dead letter; otherwise only those Sink refused.
	All bool
	// Sink options: the backoff between attempts while the destination
	// is down, and the batch size.
	Retry RetryConfig
	Batch BatchConfig
	// Progress, if set, is called after every batch.
	Progress func(RedriveProgress)
	// Logger receives one line per outage of the destination and per batch
	// refused again.
	Logger *slog.Logger
	// Secrets are masked in the reason of a dead letter refused again, as
	// in the pipeline (PipelineDeps.Secrets); nil masks URL passwords only.
	Secrets *agent.Secrets
}

// RedriveProgress counts what Redrive did.
type RedriveProgress struct {
	// Total is how many dead letters there were to look at when it began.
	Total uint64 `json:"total"`
	// Seen counts the dead letters looked at; Sent those the sink
	// accepted; Skipped those another component refused (without All);
	// Refused those the sink refused again, for good: they are back in the
	// dead-letter log with the new reason.
	Seen    uint64 `json:"seen"`
	Sent    uint64 `json:"sent"`
	Skipped uint64 `json:"skipped"`
	Refused uint64 `json:"refused"`
	// Undecodable counts dead letters that are not records (damage, or a
	// newer agent's format); they are left in place and skipped.
	Undecodable uint64 `json:"undecodable"`
}

// RedriveCursor is the name of the dead-letter log cursor that remembers
// how far the redrives through sink got.
func RedriveCursor(sink string, all bool) string {
	if all {
		return "redrive-all." + sink
	}
	return "redrive." + sink
}

// Redrive sends the dead letters of dead through sink, oldest first, up to
// the last one present when it begins. It reads them from the persistent
// cursor RedriveCursor(o.Sink, o.All), and acks a batch only once the sink
// accepted it (Write returned nil) or refused it for good: records refused
// again are appended to dead with their new reason, and synced, first. So
// nothing is lost whatever happens, and a second run sends only what the
// first did not get through (up to the cursor's persistence interval after
// a kill: those are sent again, with their IDs). Every record keeps the ID
// it had when it was refused; dead letters refused before any sink saw them
// get "<pipeline>:dead:<seq>". While the destination is down Redrive
// retries with backoff until ctx ends. Sinks that keep their cursor at the
// destination (CursorOwner) are refused: the dead letters' sequences are
// not the log's.
//
// The caller owns dead, sink and their lifetimes; Redrive calls Connect.
func Redrive(ctx context.Context, dead Log, sink agent.Sink, o RedriveOptions) (RedriveProgress, error) {
	var pr RedriveProgress
	if _, ok := ownCursor(sink); ok {
		return pr, fmt.Errorf("redrive: sink %q keeps its own cursor at the destination (exactly_once): redrive through an at-least-once sink entry", o.Sink)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Logger = slog.New(agent.RedactHandler(o.Logger.Handler(), o.Secrets))
	if o.Batch.MaxRecords <= 0 {
		o.Batch = DefaultSinkOptions().Batch
	}
	if o.Retry.Initial <= 0 {
		o.Retry = DefaultSinkOptions().Retry
	}
	end := dead.NextSeq() - 1
	r, err := dead.Reader(RedriveCursor(o.Sink, o.All))
	if err != nil {
		return pr, fmt.Errorf("redrive: cursor: %w", err)
	}
	bo := agent.Backoff{Initial: o.Retry.Initial, Max: o.Retry.Max}
	rd := redriver{o: o, dead: dead, sink: sink, bo: &bo}
	for {
		err := sink.Connect(ctx)
		if err == nil {
			rd.online()
			break
		}
		if ctx.Err() != nil {
			return pr, fmt.Errorf("redrive: connect: %w", err)
		}
		rd.down(err)
		if !agent.Sleep(ctx, bo.Next()) {
			return pr, fmt.Errorf("redrive: connect: %w", err)
		}
	}
	buf := make([]LogRecord, 0, o.Batch.MaxRecords)
	first := true
	var seen uint64 // the last sequence read
	for {
		// The log is ours alone: a Read that waits found its end. Wait
		// longer while records known to be there are still to come (a
		// slow card), so that a run does not end early.
		wait := 2 * time.Second
		if seen > 0 && seen < end {
			wait = 10 * time.Second
		}
		got, err := rd.read(ctx, r, buf, wait)
		if err != nil {
			return pr, err
		}
		for len(got) > 0 && got[len(got)-1].Seq > end {
			got = got[:len(got)-1] // appended since: refused again by this run
		}
		if len(got) == 0 {
			return pr, nil
		}
		if first {
			pr.Total, first = end-got[0].Seq+1, false
		}
		if err := rd.batch(ctx, got, &pr); err != nil {
			return pr, err
		}
		seen = got[len(got)-1].Seq
		if err := r.Ack(got[len(got)-1].Seq); err != nil {
			return pr, fmt.Errorf("redrive: ack %d: %w", got[len(got)-1].Seq, err)
		}
		if o.Progress != nil {
			o.Progress(pr)
		}
		if got[len(got)-1].Seq >= end {
			return pr, nil
		}
	}
}

// redriver is one Redrive run.
type redriver struct {
	o       RedriveOptions
	dead    Log
	sink    agent.Sink
	bo      *agent.Backoff
	recs    []agent.Record
	offline bool // the destination is down: WARN logged
	// refusedOnce: a batch was refused again (WARN logged; later ones at DEBUG)
	refusedOnce bool
}

// read returns the next records, or none once none came within wait.
func (rd *redriver) read(ctx context.Context, r LogReader, buf []LogRecord, wait time.Duration) ([]LogRecord, error) {
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	got, err := r.Read(rctx, buf[:0:rd.o.Batch.MaxRecords], int(rd.o.Batch.MaxBytes))
	switch {
	case err == nil:
		return got, nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("redrive: %w", ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		return nil, nil
	}
	return nil, fmt.Errorf("redrive: read dead letters: %w", err)
}

// batch sends the records of got that this run is for, until the sink
// accepts them or refuses them for good.
func (rd *redriver) batch(ctx context.Context, got []LogRecord, pr *RedriveProgress) error {
	recs := rd.recs[:0]
	for _, lr := range got {
		pr.Seen++
		if cap(recs) > len(recs) {
			recs = recs[:len(recs)+1]
		} else {
			recs = append(recs, agent.Record{})
		}
		rec := &recs[len(recs)-1]
		comp, _, err := DecodeDead(lr.Payload, rec)
		if err != nil {
			pr.Undecodable++
			recs = recs[:len(recs)-1]
			rd.o.Logger.Warn("redrive: dead letter does not decode; left in place", "seq", lr.Seq, "err", err)
			continue
		}
		if !rd.o.All && comp != rd.o.Sink {
			pr.Skipped++
			recs = recs[:len(recs)-1]
			continue
		}
		// The payload is reused by the next Read: the record must not
		// alias it past this batch, which it does not (Write keeps nothing).
		if rec.ID == "" {
			rec.ID = rd.o.Pipeline + ":dead:" + strconv.FormatUint(lr.Seq, 10)
		}
		rec.Seq = lr.Seq
	}
	rd.recs = recs
	if len(recs) == 0 {
		return nil
	}
	for {
		err := rd.sink.Write(ctx, recs)
		if err == nil {
			pr.Sent += uint64(len(recs))
			rd.online()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("redrive: %w", ctx.Err())
		}
		var rej *agent.RejectedError
		switch {
		case errors.As(err, &rej):
			dead := make([]agent.Dead, 0, len(rej.Index))
			for i, idx := range rej.Index {
				if idx >= 0 && idx < len(recs) {
					dead = append(dead, agent.Dead{Record: recs[idx], Component: rd.o.Sink, Err: rej.Errs[min(i, len(rej.Errs)-1)]})
				}
			}
			pr.Sent += uint64(len(recs) - len(dead))
			rd.online()
			return rd.refused(ctx, dead, pr)
		case agent.IsPermanent(err):
			dead := make([]agent.Dead, 0, len(recs))
			for _, r := range recs {
				dead = append(dead, agent.Dead{Record: r, Component: rd.o.Sink, Err: err})
			}
			rd.online()
			return rd.refused(ctx, dead, pr)
		}
		rd.down(err)
		wait := rd.bo.Next()
		if d, ok := agent.RetryAfter(err); ok {
			wait = min(max(d, 0), maxRetryAfter)
		}
		if !agent.Sleep(ctx, wait) {
			return fmt.Errorf("redrive: stopped while the destination was unavailable: %w", err)
		}
	}
}

// down logs the first failure of an outage at WARN, the others at DEBUG.
func (rd *redriver) down(err error) {
	if rd.offline {
		rd.o.Logger.Debug("redrive: destination still unavailable", "sink", rd.o.Sink, "err", err)
		return
	}
	rd.offline = true
	rd.o.Logger.Warn("redrive: destination unavailable; retrying with backoff", "sink", rd.o.Sink, "err", err)
}

func (rd *redriver) online() {
	rd.bo.Reset()
	if rd.offline {
		rd.offline = false
		rd.o.Logger.Info("redrive: destination available again", "sink", rd.o.Sink)
	}
}

// refused appends what the sink refused again to the dead-letter log, with
// the new reason, and waits for it to be durable.
func (rd *redriver) refused(ctx context.Context, dead []agent.Dead, pr *RedriveProgress) error {
	if len(dead) == 0 {
		return nil
	}
	payloads := make([][]byte, 0, len(dead))
	for _, d := range dead {
		b, err := deadPayload(d, rd.o.Secrets)
		if err != nil {
			return fmt.Errorf("redrive: encode refused record: %w", err)
		}
		payloads = append(payloads, b)
	}
	last, err := rd.dead.Append(ctx, payloads)
	if err != nil {
		return fmt.Errorf("redrive: keep refused records: %w", err)
	}
	if err := rd.dead.Sync(ctx, last); err != nil {
		return fmt.Errorf("redrive: keep refused records: %w", err)
	}
	pr.Refused += uint64(len(dead))
	if !rd.refusedOnce {
		rd.refusedOnce = true
		rd.o.Logger.Warn("redrive: destination refused records again; kept in the dead letters (counted in the summary)", "records", len(dead), "err", dead[0].Err)
	} else {
		rd.o.Logger.Debug("redrive: destination refused records again", "records", len(dead), "err", dead[0].Err)
	}
	return nil
}

// deadPayload encodes a dead letter as the dead-letter log stores it, its
// reason masked by secrets.
func deadPayload(d agent.Dead, secrets *agent.Secrets) ([]byte, error) {
	r := d.Record
	r.Fields = append(r.Fields[:len(r.Fields):len(r.Fields)], agent.String(DeadErrorField, secrets.Text(d.Err.Error())), agent.String(DeadComponentField, d.Component))
	return r.MarshalMsg(nil)
}
