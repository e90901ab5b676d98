package supervisor

import (
	"context"
	"fmt"

	"github.com/pspf/pspf-edge/agent/runner"
)

// A reload replaces a running generation only with one that can run:
//
//   - What the file and the files it names show (a bad expression, a TLS
//     file missing or not loading) is a validation error: the running
//     generation never stops (apply).
//   - A generation that cannot be built (a component's constructor fails,
//     the log or state file cannot open) is rolled back at once (apply).
//   - A generation whose source or sink fails to connect with a setup
//     error, one its connector marks agent.Permanent (TLS files gone since
//     validation, credentials or a certificate the destination refuses),
//     before all of them have connected once, is rolled back here.
//   - An outage (connection refused, a timeout, a name that does not
//     resolve) is not a reason: the new generation keeps retrying, as the
//     old one would have; a destination down during a reload must not undo
//     a good config.
//
// A rollback is reported like an invalid file: the log, the failures metric
// and the status' last_reload_error. The file's content is not tried again
// until it changes (or SIGHUP).

// watchSetup waits, in the background, for g to connect or to fail to set
// up, and hands a failure to the loop. Called with s.mu held.
func (s *Supervisor) watchSetup(m *managed, g *generation) {
	s.wg.Go(func() {
		select {
		case <-g.p.Started():
		case <-g.done:
			return
		}
		if g.p.SetupErr() == nil {
			s.mu.Lock()
			if m.probation != nil && m.probation.g == g {
				m.probation = nil // proven: every component connected
			}
			s.mu.Unlock()
			return
		}
		select {
		case s.setupFailed <- m:
		case <-g.done: // stopped meanwhile (shutdown, another reload)
		}
	})
}

// rollback stops m's generation on probation, which failed to set up, and
// starts the config that ran before it again.
func (s *Supervisor) rollback(ctx context.Context, m *managed) {
	s.mu.Lock()
	pr := m.probation
	if pr == nil || m.run != pr.g || m.removed {
		s.mu.Unlock()
		return // superseded by a reload or a removal
	}
	m.probation = nil
	failedGen := m.gen
	cfg := s.cfg
	s.mu.Unlock()
	cause := fmt.Errorf("pipeline %q: generation %d cannot start: %w", m.name, failedGen, pr.g.p.SetupErr())
	if err := s.stop(pr.g, runner.StopOptions{KeepBacklog: true, DrainTimeout: cfg.ShutdownTimeout}); err != nil {
		s.d.Logger.Warn("pipeline generation ended with errors", "pipeline", m.name, "generation", failedGen, "err", err)
	}
	s.retire(m, pr.g)
	g, err := s.start(ctx, m, pr.spec, pr.gen, cfg)
	if err != nil {
		s.mu.Lock()
		m.run = nil
		s.mu.Unlock()
		err = fmt.Errorf("%w; the previous config cannot start either: %w", cause, err)
		s.fail(m, err, "pipeline could not start")
		s.scheduleRestart(m, pr.spec, pr.gen, pr.key, err, false)
		return
	}
	s.mu.Lock()
	m.run, m.spec, m.gen, m.runKey, m.final = g, pr.spec, pr.gen, pr.key, nil
	s.registerSinkGauges(m, pr.spec)
	s.mu.Unlock()
	s.fail(m, cause, "pipeline reload failed; the previous config runs again")
}
