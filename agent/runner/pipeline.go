package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// PipelineDeps is what a pipeline needs from the agent around it.
type PipelineDeps struct {
	// Registry builds the components named in the spec.
	Registry *Registry
	// Logger is the agent's logger; the pipeline adds its name.
	Logger *slog.Logger
	// Metrics receives the pipeline's counters.
	Metrics *Metrics
	// DataDir is the pipeline's own directory (logs, component files).
	DataDir string
	// AgentName identifies the agent upstream.
	AgentName string
	// OpenLog opens the pipeline log and the dead-letter log.
	OpenLog OpenLogFunc
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ShutdownTimeout bounds the drain on shutdown.
	ShutdownTimeout time.Duration
	// Generation numbers the config this pipeline runs: 1 for the first load,
	// one more for every reload.
	Generation int
	// CheckpointInterval is the period of the stateful stage's checkpoints
	// when the pipeline spec sets none (PipelineSpec.Checkpoint); 0 means
	// checkpoint.DefaultInterval. It bounds the replay after a crash.
	CheckpointInterval time.Duration
	// StateCacheBytes is the memory budget of the state store: the cache
	// of state.db, or all the state of a memory store; 0 means
	// state.DefaultCacheBytes.
	StateCacheBytes int64
	// Secrets is the agent's set of secret values: the pipeline adds its
	// spec's (PipelineSpec.Secrets) and masks them, and every URL
	// password, in its log lines, last errors, dead-letter reasons and
	// the error Run returns. Nil means a set of the pipeline's own.
	Secrets *agent.Secrets
	// States hands the memory state store (`state: {store: memory}`) from
	// one generation of the pipeline to the next; nil: every generation
	// starts with empty state.
	States *StateKeeper
	// Appended, if set, is called after every chunk of records a source
	// appended to the pipeline's log (its input log, for a stateful
	// pipeline), on the source's goroutine: it must not block. The
	// supervisor samples the backlogs on it, in the wake-up the records
	// bring.
	Appended func()
}

// Pipeline is one running pipeline: its sources feed the stateless operators,
// whose output is appended to the pipeline log; every sink forwards from its own
// cursor on that log. A Pipeline runs once.
type Pipeline struct {
	spec    *PipelineSpec
	deps    PipelineDeps
	log     *slog.Logger
	sources []*sourceRun
	ops     []opRun // the stateless operators of the first source (or a chain of their own without one): its counters are every chain's
	sinks   []*sinkRun
	dead    *sinkRun       // forwards the dead-letter log, if a dead-letter sink is configured
	stage   *statefulStage // the stateful operators, if any; see stateful_stage.go

	plog    Log
	deadLog Log
	deadMu  sync.Mutex // serialises appends to deadLog

	deadCount *agent.Counter
	startedAt time.Time
	lastErr   atomic.Pointer[lastError]
	stopOpts  atomic.Pointer[StopOptions] // how Run ends; see SetStop
	setup     startup                     // first connections; see Started
	cancelRun atomic.Pointer[context.CancelFunc]
	aborted   atomic.Pointer[error] // why Run ended on its own; see abort
}

type opRun struct {
	name     string
	op       agent.Operator
	in, out  *agent.Counter
	panics   *agent.Counter
	failures *agent.Counter
}

// newChain builds the stateless operators of specs, in order. Its counters
// are the component's, shared by every chain built from the same spec: an
// operator's figures add up over the sources that run it.
func (p *Pipeline) newChain(specs []ComponentSpec, env func(ComponentSpec) agent.Env) ([]opRun, error) {
	ops := make([]opRun, 0, len(specs))
	for _, c := range specs {
		e := env(c)
		o, err := p.deps.Registry.Operators[c.Type].New(c.Config, e)
		if err != nil {
			return nil, fmt.Errorf("pipeline %q: %s: %w", p.spec.Name, c.Place, err)
		}
		ops = append(ops, newOpRun(c.Name, o, e))
	}
	return ops, nil
}

// NewPipeline builds a pipeline's components and opens its logs. It starts no
// goroutines; on error everything it opened is closed again.
func NewPipeline(spec *PipelineSpec, deps PipelineDeps) (_ *Pipeline, err error) {
	defer func() { err = deps.Secrets.Redact(err) }()
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.ShutdownTimeout <= 0 {
		deps.ShutdownTimeout = 15 * time.Second
	}
	if deps.Metrics == nil {
		deps.Metrics = NewMetrics()
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Secrets == nil {
		deps.Secrets = new(agent.Secrets)
	}
	// Before any component exists: the errors of their constructors are
	// masked already.
	deps.Secrets.Add(spec.Secrets()...)
	logger := slog.New(agent.RedactHandler(deps.Logger.Handler(), deps.Secrets))
	p := &Pipeline{spec: spec, deps: deps, log: logger.With("pipeline", spec.Name)}
	p.deadCount = deps.Metrics.Counter("pspf_dead_letters_total", "pipeline", spec.Name)
	defer func() {
		if err != nil {
			p.closeLogs()
		}
	}()
	if err := os.MkdirAll(deps.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("pipeline %q: data dir: %w", spec.Name, err)
	}
	env := func(c ComponentSpec) agent.Env {
		dir := filepath.Join(deps.DataDir, "components", c.Name)
		return agent.Env{
			Pipeline:  spec.Name,
			Component: c.Name,
			Logger:    p.log.With("component", c.Name),
			Metrics:   deps.Metrics,
			DataDir:   dir,
			AgentName: deps.AgentName,
			Now:       deps.Now,
			Secrets:   deps.Secrets,
			ReportError: func(err error) {
				owner := "reported by " + c.Place
				if err == nil {
					p.clearErrOf(owner)
					return
				}
				p.setErrOf(owner, fmt.Errorf("%s: %w", c.Name, err))
			},
		}
	}
	warnInsecureTLS(spec, env)
	reg := deps.Registry
	stateful := spec.StatefulIndex(reg)
	for _, c := range spec.Sources {
		s, err := reg.Sources[c.Type].New(c.Config, env(c))
		if err != nil {
			return nil, fmt.Errorf("pipeline %q: %s: %w", spec.Name, c.Place, err)
		}
		sr := newSourceRun(p, c, s, env(c))
		// Each source runs the stateless operators on its own goroutine,
		// and an operator's Process runs on one goroutine at a time: every
		// source gets instances of its own, built from the same spec.
		if sr.ops, err = p.newChain(spec.Operators[:stateful], env); err != nil {
			return nil, err
		}
		p.sources = append(p.sources, sr)
	}
	if len(p.sources) > 0 {
		p.ops = p.sources[0].ops
	} else if p.ops, err = p.newChain(spec.Operators[:stateful], env); err != nil {
		return nil, err
	}
	if p.plog, err = deps.OpenLog(filepath.Join(deps.DataDir, "log"), spec.Buffer); err != nil {
		return nil, fmt.Errorf("pipeline %q: open log: %w", spec.Name, err)
	}
	if p.deadLog, err = deps.OpenLog(filepath.Join(deps.DataDir, "dead"), DeadLetterBufferConfig()); err != nil {
		return nil, fmt.Errorf("pipeline %q: open dead-letter log: %w", spec.Name, err)
	}
	sinkLog := p.plog
	if stateful < len(spec.Operators) {
		if p.stage, err = newStatefulStage(p, spec.Operators[stateful:], env); err != nil {
			return nil, fmt.Errorf("pipeline %q: %w", spec.Name, err)
		}
		sinkLog = p.stage.outbox
	}
	// A sink's Unreachable reports to its runner, which exists only once
	// the sink does; it is called from Write, after Run started.
	sinkEnv := func(c ComponentSpec, sr **sinkRun) agent.Env {
		e := env(c)
		e.Unreachable = func(err error) { (*sr).offline(err) }
		return e
	}
	for _, c := range spec.Sinks {
		var sr *sinkRun
		s, err := reg.Sinks[c.Type].New(c.Config, sinkEnv(c, &sr))
		if err != nil {
			return nil, fmt.Errorf("pipeline %q: %s: %w", spec.Name, c.Place, err)
		}
		r, err := sinkLog.Reader("sink." + c.Name)
		if err != nil {
			return nil, fmt.Errorf("pipeline %q: %s: cursor: %w", spec.Name, c.Place, err)
		}
		sr = newSinkRun(p, c, s, r, sinkLog, env(c), false)
		p.sinks = append(p.sinks, sr)
	}
	seedSinkCursors(sinkLog, p.sinks)
	if err := p.exactlyOnce(); err != nil {
		return nil, fmt.Errorf("pipeline %q: %w", spec.Name, err)
	}
	if c := spec.DeadLetter; c != nil {
		var sr *sinkRun
		s, err := reg.Sinks[c.Type].New(c.Config, sinkEnv(*c, &sr))
		if err != nil {
			return nil, fmt.Errorf("pipeline %q: dead_letter: %w", spec.Name, err)
		}
		r, err := p.deadLog.Reader("sink." + c.Name)
		if err != nil {
			return nil, fmt.Errorf("pipeline %q: dead_letter: cursor: %w", spec.Name, err)
		}
		sr = newSinkRun(p, *c, s, r, p.deadLog, env(*c), true)
		p.dead = sr
	}
	return p, nil
}

// warnInsecureTLS warns, as the pipeline is built, of each tls block of its
// components that sets insecure_skip_verify (WarnInsecureTLS).
func warnInsecureTLS(spec *PipelineSpec, env func(ComponentSpec) agent.Env) {
	all := slices.Concat(spec.Sources, spec.Operators, spec.Sinks)
	if spec.DeadLetter != nil {
		all = append(all, *spec.DeadLetter)
	}
	for _, c := range all {
		WarnInsecureTLS(env(c).Logger, c.Place, c.Config)
	}
}

// WarnInsecureTLS logs one WARN on logger for each tls block of cfg (a
// component's or the fleet channel's decoded config) that sets
// insecure_skip_verify (agent.InsecureTLS), naming the setting's place
// under place, like sinks[0].mqtt.tls.insecure_skip_verify. The pipelines
// call it as they are built, the agent for its fleet section at start: a
// link that accepts any certificate is not protected against whoever is on
// the path, and a test setting left in service must show.
func WarnInsecureTLS(logger *slog.Logger, place string, cfg any) {
	for _, at := range agent.InsecureTLS(cfg) {
		logger.Warn("tls: insecure_skip_verify is on: the server's certificate is not verified, so anyone on the path can read and change this link; for tests only",
			"setting", place+"."+at+".insecure_skip_verify")
	}
}

// Spec returns the spec the pipeline was built from.
func (p *Pipeline) Spec() *PipelineSpec { return p.spec }

// Run runs the pipeline until ctx is done or every source has ended (io.EOF),
// then shuts down in two phases: sources stop and their in-flight batches are
// appended and acked; then the sinks drain what the log holds, within the
// shutdown timeout, and are flushed and closed. What they could not send stays
// in the log for the next start. Run returns after every goroutine it started
// has ended; the error reports what failed during shutdown.
//
// Run also ends on its own when the pipeline cannot go on: its stateful
// operators' state file turned out damaged, or a checkpoint failed to
// commit. It then stops as for a reload (the backlog stays for the next
// start) and returns an error wrapping the cause; started again, the
// pipeline recovers (stateful_reset.go). The supervisor does that, with
// backoff.
func (p *Pipeline) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.cancelRun.Store(&cancel)
	if p.aborted.Load() != nil {
		cancel()
	}
	p.startedAt = p.deps.Now()
	p.log.Info("pipeline starting", "generation", p.deps.Generation, "sources", len(p.sources), "operators", len(p.ops), "sinks", len(p.sinks))

	sinkCtx, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSinks()
	// The dead-letter sink has a WaitGroup of its own: it drains only once
	// the other sinks are done, since they add dead letters as they go.
	var sinksWG, deadWG sync.WaitGroup
	for _, s := range p.sinks {
		sinksWG.Go(func() { s.run(sinkCtx) })
	}
	if p.dead != nil {
		deadWG.Go(func() { p.dead.run(sinkCtx) })
	}
	all := p.sinks
	if p.dead != nil {
		all = append(all[:len(all):len(all)], p.dead)
	}
	stopStage := p.startStage(ctx)

	// Phase 0: ingest until ctx is done or all sources end.
	commits := make(chan pending, 64)
	var commitWG sync.WaitGroup
	commitWG.Go(func() { p.commit(commits) })
	var srcWG sync.WaitGroup
	for _, s := range p.sources {
		srcWG.Go(func() { s.run(ctx, commits) })
	}
	srcWG.Wait()
	close(commits)
	commitWG.Wait()

	// Phase 1: sources are stopped and acked; close them.
	stop := p.stopOptions()
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stop.DrainTimeout)
	defer cancel()
	var errs []error
	for _, s := range p.sources {
		if err := s.src.Close(closeCtx); err != nil {
			errs = append(errs, fmt.Errorf("%s: close: %w", s.name, err))
		}
	}

	// The stateful stage catches up with the log (unless the backlog is
	// kept) and checkpoints.
	if err := stopStage(closeCtx, stop.KeepBacklog); err != nil {
		errs = append(errs, err)
	}

	// Phase 2: sinks drain up to the end of the log (or, keeping the backlog
	// for the next generation, stop now), then the dead-letter sink up to
	// the end of the dead-letter log as the sinks left it; then all flush
	// and close.
	timedOut := false
	wait := func(wg *sync.WaitGroup) {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-closeCtx.Done():
			if !timedOut {
				timedOut = true
				p.log.Warn("shutdown timeout: undelivered records stay in the log for the next start", "timeout", stop.DrainTimeout)
			}
			stopSinks()
			<-done
		}
	}
	if stop.KeepBacklog {
		stopSinks()
	} else {
		p.log.Info("pipeline draining", "log_end", p.sinkLog().NextSeq()-1)
		for _, s := range p.sinks {
			s.drain(p.sinkLog().NextSeq() - 1)
		}
		wait(&sinksWG)
		if p.dead != nil {
			p.dead.drain(p.deadLog.NextSeq() - 1)
		}
	}
	wait(&sinksWG)
	wait(&deadWG)
	for _, s := range all {
		if err := s.close(closeCtx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.closeLogs(); err != nil {
		errs = append(errs, err)
	}
	if a := p.aborted.Load(); a != nil {
		p.log.Info("pipeline stopped", "err", *a)
		return p.deps.Secrets.Redact(fmt.Errorf("pipeline %q stopped: %w", p.spec.Name, errors.Join(append([]error{*a}, errs...)...)))
	}
	p.log.Info("pipeline stopped")
	return p.deps.Secrets.Redact(errors.Join(errs...))
}

// abort ends Run from inside, once: a component found that the pipeline
// cannot go on. Run stops as for a reload, keeping the backlog, and returns
// an error wrapping err.
func (p *Pipeline) abort(err error) {
	if !p.aborted.CompareAndSwap(nil, &err) {
		return
	}
	p.log.Error("pipeline stopping: it cannot go on; started again, it recovers", "err", err)
	p.SetStop(StopOptions{KeepBacklog: true, DrainTimeout: p.stopOptions().DrainTimeout})
	if c := p.cancelRun.Load(); c != nil {
		(*c)()
	}
}

func (p *Pipeline) closeLogs() error {
	var errs []error
	if p.stage != nil {
		errs = append(errs, p.stage.close())
	}
	if p.plog != nil {
		errs = append(errs, p.plog.Close())
	}
	if p.deadLog != nil {
		errs = append(errs, p.deadLog.Close())
	}
	return errors.Join(errs...)
}

// lastError is the pipeline's last error and the component it came from
// ("" for errors no recovery clears).
type lastError struct{ owner, msg string }

// setErr records the pipeline's last error for status.
func (p *Pipeline) setErr(err error) {
	p.lastErr.Store(&lastError{msg: p.deps.Secrets.Text(err.Error())})
}

// setErrOf records err as the pipeline's last error, coming from owner:
// clearErrOf(owner) clears it once owner has recovered.
func (p *Pipeline) setErrOf(owner string, err error) {
	p.lastErr.Store(&lastError{owner: owner, msg: p.deps.Secrets.Text(err.Error())})
}

// clearErrOf clears the pipeline's last error if owner reported it.
func (p *Pipeline) clearErrOf(owner string) {
	for {
		cur := p.lastErr.Load()
		if cur == nil || cur.owner != owner {
			return
		}
		if p.lastErr.CompareAndSwap(cur, nil) {
			return
		}
	}
}

// LastError returns the last error a component of the pipeline reported,
// or "": a sink's error is cleared once the sink delivers again.
func (p *Pipeline) LastError() string {
	if e := p.lastErr.Load(); e != nil {
		return e.msg
	}
	return ""
}

// process runs the stateless operators ops (a chain no other goroutine
// runs meanwhile) over b. An operator's error or panic moves the batch's
// records to the dead letters and ends the chain for it.
func (p *Pipeline) process(ctx context.Context, ops []opRun, b *agent.Batch) {
	for i := range ops {
		o := &ops[i]
		o.in.Add(len(b.Records))
		if err := o.call(ctx, b); err != nil {
			p.log.Warn("operator failed; batch sent to dead letters", "component", o.name, "err", err, "records", len(b.Records))
			p.setErr(fmt.Errorf("%s: %w", o.name, err))
			for _, r := range b.Records {
				b.Reject(r, o.name, err)
			}
			b.Records = b.Records[:0]
			return
		}
		o.out.Add(len(b.Records))
		if len(b.Records) == 0 {
			return
		}
	}
}

func (o *opRun) call(ctx context.Context, b *agent.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			o.panics.Inc()
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	if err := o.op.Process(ctx, b); err != nil {
		o.failures.Inc()
		return err
	}
	return nil
}

// deadLetter appends rejected records to the dead-letter log with their reason
// in the fields `_error` and `_component`.
func (p *Pipeline) deadLetter(ctx context.Context, dead []agent.Dead) {
	last := p.appendDead(ctx, dead)
	if last == 0 {
		return
	}
	if err := p.deadLog.Sync(ctx, last); err != nil {
		p.log.Error("dead-letter log sync failed", "records", len(dead), "err", err)
		p.setErr(fmt.Errorf("dead letters: %w", err))
	}
}

// appendDead appends dead records to the dead-letter log without waiting
// for their fsync, and returns the sequence of the last one (0 if none was
// appended: a failure is logged and shows in the pipeline's status).
func (p *Pipeline) appendDead(ctx context.Context, dead []agent.Dead) uint64 {
	if len(dead) == 0 {
		return 0
	}
	p.deadMu.Lock()
	defer p.deadMu.Unlock()
	payloads := make([][]byte, 0, len(dead))
	for _, d := range dead {
		b, err := deadPayload(d, p.deps.Secrets)
		if err != nil {
			p.log.Error("dead letter cannot be encoded; dropped", "err", err)
			continue
		}
		payloads = append(payloads, b)
	}
	if len(payloads) == 0 {
		return 0
	}
	p.deadCount.Add(len(payloads))
	last, err := p.deadLog.Append(ctx, payloads)
	if err != nil {
		p.log.Error("dead-letter log append failed", "records", len(payloads), "err", err)
		p.setErr(fmt.Errorf("dead letters: %w", err))
		return 0
	}
	return last
}
