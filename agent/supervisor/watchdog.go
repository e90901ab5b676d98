package supervisor

import (
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// stopGrace is added to the drain timeout to bound how long stopping a
// generation may take: the timeout bounds closing the components and the
// stateful stage's catch-up; before that the sources hand over the batches
// they hold (an append and an fsync each), which takes far less.
const stopGrace = 10 * time.Second

// stop ends g as o says and waits for it, on the supervisor's loop. A
// reload's stop may take up to the drain timeout (shutdown_timeout), longer
// than the service manager's watchdog interval: meanwhile the watchdog is
// fed, but only for as long as the stop is bounded to take. A stop that
// overruns the bound is stuck; the pings stop, and systemd restarts the
// agent.
func (s *Supervisor) stop(g *generation, o runner.StopOptions) error {
	g.p.SetStop(o)
	g.cancel()
	s.waitFed(g.done, o.DrainTimeout+stopGrace)
	<-g.done
	return g.err
}

// waitFed waits for done, sending WATCHDOG=1 at the watchdog interval for
// at most bound. It reports whether done came within the bound.
func (s *Supervisor) waitFed(done <-chan struct{}, bound time.Duration) bool {
	if s.d.Watchdog <= 0 {
		<-done
		return true
	}
	tick := time.NewTicker(s.d.Watchdog)
	defer tick.Stop()
	over := time.NewTimer(bound)
	defer over.Stop()
	for {
		select {
		case <-done:
			return true
		case <-tick.C:
			s.notify("WATCHDOG=1")
		case <-over.C:
			s.d.Logger.Error("a pipeline generation has not stopped within the drain timeout; the watchdog is no longer fed, so that the service manager restarts the agent", "bound", bound)
			<-done
			return false
		}
	}
}
