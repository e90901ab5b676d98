package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// A pipeline with a valid config is never left down for good. A generation
// that cannot start (runner.NewPipeline fails: a log, the state file or a
// component cannot open), and one that ends on its own with an error (its
// stateful operators found their state file damaged, a checkpoint failed to
// commit), are started again, with exponential backoff and full jitter
// (restartInitial doubling up to restartMax). The backoff starts over once a
// generation has run for restartMax. Meanwhile the pipeline shows as
// `restarting` and /readyz answers 503 naming it. A generation whose sources
// ended on their own (io.EOF, without an error) has done its job: it is not
// started again. A change of the file (apply) or its removal supersedes a
// pending restart.

// Restart backoff.
const (
	restartInitial = time.Second
	restartMax     = time.Minute
)

// restart is a pending start of a pipeline.
type restart struct {
	at        time.Time
	spec      *runner.PipelineSpec
	gen       int
	key       string
	cause     error
	newConfig bool // the start of a changed file failed: success applies the change
}

// ended handles a generation whose Run returned without the supervisor
// asking: an error schedules a restart. Called on the generation's
// goroutine, once Run has returned.
func (s *Supervisor) ended(m *managed, g *generation) {
	if g.err == nil {
		s.d.Logger.Info("pipeline stopped: its sources ended", "pipeline", m.name, "generation", g.gen)
		return
	}
	s.mu.Lock()
	if m.run != g || m.removed {
		s.mu.Unlock()
		return // superseded meanwhile
	}
	if time.Since(g.started) >= restartMax {
		m.restartBO.Reset()
	}
	m.probation = nil
	d := s.scheduleLocked(m, &restart{spec: m.spec, gen: m.gen, key: m.runKey, cause: g.err})
	s.mu.Unlock()
	s.d.Logger.Error("pipeline failed; starting it again", "pipeline", m.name, "generation", g.gen, "err", g.err, "in", d.Round(time.Millisecond))
}

// scheduleRestart schedules a start of spec after a failed start of
// generation gen; newConfig says that spec is a changed file's content.
func (s *Supervisor) scheduleRestart(m *managed, spec *runner.PipelineSpec, gen int, key string, cause error, newConfig bool) {
	s.mu.Lock()
	d := s.scheduleLocked(m, &restart{spec: spec, gen: gen, key: key, cause: cause, newConfig: newConfig})
	s.mu.Unlock()
	s.d.Logger.Warn("pipeline will be started again", "pipeline", m.name, "generation", gen, "in", d.Round(time.Millisecond))
}

// scheduleLocked sets m's pending restart after the next backoff delay and
// wakes the loop. Requires s.mu.
func (s *Supervisor) scheduleLocked(m *managed, r *restart) time.Duration {
	d := m.restartBO.Next()
	r.at = time.Now().Add(d)
	m.restart = r
	select {
	case s.restartWake <- struct{}{}:
	default:
	}
	return d
}

// restartTimer returns a channel that fires when the earliest pending
// restart is due; nil when none is pending. Only the loop calls it.
func (s *Supervisor) restartTimer() <-chan time.Time {
	var at time.Time
	s.mu.Lock()
	for _, m := range s.pipes {
		if r := m.restart; r != nil && (at.IsZero() || r.at.Before(at)) {
			at = r.at
		}
	}
	s.mu.Unlock()
	if at.IsZero() {
		return nil
	}
	if s.restartT == nil {
		s.restartT = time.NewTimer(time.Until(at))
	} else {
		s.restartT.Reset(time.Until(at))
	}
	return s.restartT.C
}

// restartDue starts every pipeline whose restart is due. A start that fails
// again is scheduled again, further out.
func (s *Supervisor) restartDue(ctx context.Context) {
	for _, name := range s.names() {
		s.mu.Lock()
		m := s.pipes[name]
		r := m.restart
		if r == nil || time.Now().Before(r.at) || m.removed {
			s.mu.Unlock()
			continue
		}
		m.restart = nil
		old, cfg := m.run, s.cfg
		s.mu.Unlock()
		if old != nil && old.alive() {
			continue // a reload or a rollback started one meanwhile
		}
		if old != nil {
			s.retire(m, old)
		}
		m.restarts.Inc()
		g, err := s.start(ctx, m, r.spec, r.gen, cfg)
		if err != nil {
			err = fmt.Errorf("pipeline %q: start generation %d: %w", name, r.gen, err)
			s.mu.Lock()
			m.run = nil
			d := s.scheduleLocked(m, &restart{spec: r.spec, gen: r.gen, key: r.key, cause: err, newConfig: r.newConfig})
			s.mu.Unlock()
			s.d.Logger.Error("pipeline could not start again; retrying", "pipeline", name, "generation", r.gen, "err", err, "in", d.Round(time.Millisecond))
			continue
		}
		s.mu.Lock()
		m.run, m.spec, m.gen, m.runKey, m.final = g, r.spec, r.gen, r.key, nil
		if r.newConfig {
			m.reloadErr = ""
		}
		s.registerSinkGauges(m, r.spec)
		s.mu.Unlock()
		s.d.Logger.Info("pipeline started again", "pipeline", name, "generation", r.gen, "after", r.cause)
	}
}

// down reports whether m, which has a valid config, is not running, and
// why. One that runs, has ended on its own (its sources done) or was
// removed is not down. Requires s.mu.
func (m *managed) down() (bool, string) {
	switch {
	case m.removed:
		return false, ""
	case m.restart != nil:
		return true, fmt.Sprintf("restarting in %s after: %v", max(0, time.Until(m.restart.at)).Round(time.Millisecond), m.restart.cause)
	case m.spec != nil && m.run == nil:
		return true, "could not start: " + m.reloadErr
	case m.run != nil && !m.run.alive() && m.run.err != nil:
		return true, fmt.Sprintf("failed: %v", m.run.err)
	}
	return false, ""
}
