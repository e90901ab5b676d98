package runner

import (
	"context"
	"sync"
)

// sinkLog is the log the sinks read: the outbox when the pipeline has
// stateful operators, else the pipeline log.
func (p *Pipeline) sinkLog() Log {
	if p.stage != nil {
		return p.stage.outbox
	}
	return p.plog
}

// startStage starts the stateful stage and its checkpoints, if the pipeline
// has stateful operators. The returned stop function ends them: unless keep
// is set, the stage first catches up with the pipeline log (whose sources
// have stopped); then a last checkpoint is made.
func (p *Pipeline) startStage(ctx context.Context) (stop func(ctx context.Context, keep bool) error) {
	if p.stage == nil {
		return func(context.Context, bool) error { return nil }
	}
	s := p.stage
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	ckptCtx, cancelCkpt := context.WithCancel(context.WithoutCancel(ctx))
	drain := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.run(runCtx, drain) })
	var ckWG sync.WaitGroup
	ckWG.Go(func() { s.checkpoints(ckptCtx) })
	return func(ctx context.Context, keep bool) error {
		if keep {
			cancelRun()
		} else {
			close(drain)
			// A drain that outlasts the shutdown timeout is cut short.
			stopAfter := context.AfterFunc(ctx, cancelRun)
			defer stopAfter()
		}
		wg.Wait()
		cancelRun()
		cancelCkpt()
		ckWG.Wait()
		s.mu.Lock()
		failed := s.failed
		s.mu.Unlock()
		if failed != nil {
			// Nothing more may be committed from this state; Run reports
			// the failure (Pipeline.abort).
			return nil
		}
		return s.checkpoint(context.WithoutCancel(ctx))
	}
}

// Checkpoint makes a checkpoint of the pipeline's stateful operators now
// and returns once it is durable: their state, the pipeline-log position they
// have consumed and the outbox end, in one transaction. A pipeline without
// stateful operators has nothing to checkpoint and returns nil. It is safe
// to call while Run runs (for a reload); Run also checkpoints periodically
// and when it ends.
func (p *Pipeline) Checkpoint(ctx context.Context) error {
	if p.stage == nil {
		return nil
	}
	return p.stage.checkpoint(ctx)
}

// seedSinkCursors starts each sink's delivered mark at its persisted
// cursor, so that a drain on shutdown knows at once that a sink which had
// already delivered everything before this start has caught up (rather
// than waiting for the shutdown timeout for records that will not come).
func seedSinkCursors(l Log, runs []*sinkRun) {
	st, ok := l.(stageLogStatter)
	if !ok {
		return
	}
	for _, c := range st.Stats().Cursors {
		for _, s := range runs {
			if c.Name == "sink."+s.name {
				s.acked.Store(c.Acked)
			}
		}
	}
}
