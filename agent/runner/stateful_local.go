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

// LocalResult is what RunLocal produced: the records the sinks would have
// received, in order, and the dead letters (with their `_error` and
// `_component` fields).
type LocalResult struct {
	Records []agent.Record
	Dead    []agent.Record
}

// RunLocal runs a pipeline's operators over input deterministically, for
// `pspf-edge test`: no source and no sink is built (input replaces the
// sources, the result the sinks), nothing touches the network, and time is a
// virtual clock driven by event time. The clock starts at the Unix epoch and
// moves to the highest event time seen after the stateless operators; it is
// every batch's Now, every record's receive time, and the processing time of
// the stateful operators, whose timers run after every record.
//
// Records go one at a time through the same code as in a live pipeline: the
// stateless operators, the pipeline log, the stateful stage with its state
// file and checkpoints, the outbox. At the end of the input the stateful
// operators that hold results back emit them (EndOfInputer). dir is an empty
// directory for the logs and the state; the caller removes it.
func RunLocal(ctx context.Context, spec *PipelineSpec, reg *Registry, dir string, input []agent.Record) (LocalResult, error) {
	var res LocalResult
	clock := time.Unix(0, 0).UTC()
	local := *spec
	local.Sources, local.Sinks, local.DeadLetter = nil, nil, nil
	if local.State.Store == StoreKafka {
		// No source, no partitions: the state stays in the test's
		// directory, as in the store's cache.
		local.State = StateConfig{Store: StoreBbolt}
	}
	local.Buffer = DefaultBufferConfig()
	local.Buffer.Sync = "none"
	local.Buffer.MaxBytes = 1 << 30
	local.Buffer.SegmentBytes = 64 << 20
	p, err := NewPipeline(&local, PipelineDeps{
		Registry: reg, DataDir: dir, OpenLog: OpenDiskLog(slog.New(slog.DiscardHandler)),
		Now: func() time.Time { return clock }, CheckpointInterval: time.Hour,
	})
	if err != nil {
		return res, err
	}
	defer p.closeLogs()
	s := p.stage
	var stageBuf []LogRecord
	if s != nil {
		stageBuf = make([]LogRecord, 0, 64)
	}
	var src sourceRun
	src.p = p
	b := &agent.Batch{}
	for i := range input {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		b.Reset()
		r := input[i]
		r.RecvTime = clock.UnixNano()
		b.Records = append(b.Records, r)
		b.Now = clock
		p.process(ctx, p.ops, b)
		if len(b.Dead) > 0 {
			p.deadLetter(ctx, b.Dead)
		}
		for j := range b.Records {
			if t := b.Records[j].EventTime; t > clock.UnixNano() {
				clock = time.Unix(0, t).UTC()
			}
		}
		if len(b.Records) > 0 {
			pays, err := src.encode(b.Records)
			if err != nil {
				return res, fmt.Errorf("test: %w", err)
			}
			if _, err := p.plog.Append(ctx, pays); err != nil {
				return res, fmt.Errorf("test: append: %w", err)
			}
		}
		if s == nil {
			continue
		}
		s.mu.Lock()
		for s.next < p.plog.NextSeq() {
			got, err := s.reader.Read(ctx, stageBuf[:0], 0)
			if err != nil {
				s.mu.Unlock()
				return res, fmt.Errorf("test: read log: %w", err)
			}
			s.step(ctx, got, clock)
		}
		s.timers(ctx, clock)
		s.mu.Unlock()
	}
	if s != nil {
		s.mu.Lock()
		s.finish(ctx, clock)
		s.mu.Unlock()
		if err := s.checkpoint(ctx); err != nil {
			return res, fmt.Errorf("test: %w", err)
		}
	}
	if res.Records, err = drainLog(ctx, p.sinkLog(), p.spec.Name, true); err != nil {
		return res, fmt.Errorf("test: read output: %w", err)
	}
	if res.Dead, err = drainLog(ctx, p.deadLog, p.spec.Name, false); err != nil {
		return res, fmt.Errorf("test: read dead letters: %w", err)
	}
	return res, nil
}

// drainLog reads every record of l through a cursor of its own, as a sink
// would see them (ids filled in).
func drainLog(ctx context.Context, l Log, pipeline string, ids bool) ([]agent.Record, error) {
	r, err := l.Reader("test")
	if err != nil {
		return nil, err
	}
	var out []agent.Record
	buf := make([]LogRecord, 0, 256)
	for seen := uint64(0); seen+1 < l.NextSeq(); {
		got, err := r.Read(ctx, buf[:0], 0)
		if err != nil {
			return nil, err
		}
		for _, lr := range got {
			var rec agent.Record
			if _, err := rec.UnmarshalMsg(lr.Payload); err != nil {
				return nil, fmt.Errorf("record %d: %w", lr.Seq, err)
			}
			if rec.ID == "" && ids {
				rec.ID = pipeline + ":" + strconv.FormatUint(lr.Seq, 10)
			}
			out = append(out, rec)
			seen = lr.Seq
		}
		if len(got) == 0 {
			return nil, errors.New("log read returned nothing")
		}
	}
	return out, nil
}
