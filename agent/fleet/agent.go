package fleet

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"maps"
)

// AgentConfig is what an Agent is built from.
type AgentConfig struct {
	// Applier writes the bundles; it must be open.
	Applier *Applier
	// Channel brings them, for Targets.
	Channel Channel
	Targets []string
	// Health says whether the pipeline called name runs the file content
	// of SHA-256 hash and every one of its sources and sinks has
	// connected, and if not why (supervisor.Supervisor.Health). Nil takes
	// every bundle as up.
	Health func(name, hash string) (ok bool, why string)
	// GracePeriod is how long a new bundle's pipelines have to come up
	// before the previous bundle is brought back; 0 means
	// DefaultGracePeriod.
	GracePeriod time.Duration
	// CheckEvery is how often the pipelines are looked at meanwhile; 0
	// means 250ms.
	CheckEvery time.Duration
	Logger     *slog.Logger
}

// Agent is an agent's side of the fleet: it takes the bundles of its
// targets from a channel, hands them to its Applier, and rolls a bundle
// back when its pipelines do not come up within the grace period.
type Agent struct {
	c AgentConfig
}

// NewAgent returns an agent's fleet client; it starts nothing until Run.
func NewAgent(c AgentConfig) *Agent {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.GracePeriod <= 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.CheckEvery <= 0 {
		c.CheckEvery = 250 * time.Millisecond
	}
	return &Agent{c: c}
}

// Run follows the channel until ctx is done, and returns once everything
// it started has ended. A bundle refused is reported by the applier (log,
// metric, status). A bundle on trial when Run starts (the agent stopped
// during its grace period) gets a full grace period again.
func (a *Agent) Run(ctx context.Context) error {
	a.c.Logger.Info("fleet: following the config channel", "targets", strings.Join(a.c.Targets, ","), "bundle_version", a.c.Applier.Version())
	trial := make(chan struct{}, 1)
	trial <- struct{}{} // one on trial since before the start
	var wg sync.WaitGroup
	gctx, stop := context.WithCancel(ctx)
	wg.Go(func() { a.guard(gctx, trial) })
	defer func() { stop(); wg.Wait() }()
	return a.c.Channel.Run(ctx, a.c.Targets, func(target string, raw []byte) {
		a.c.Logger.Debug("fleet: bundle received", "target", target, "bytes", len(raw))
		if ok, _ := a.c.Applier.Apply(raw); ok { // a refusal is reported by Apply
			select {
			case trial <- struct{}{}:
			default: // the guard looks at the newest anyway
			}
		}
	})
}

// guard watches the bundle on trial: once all its pipelines are up it is
// marked healthy; at the end of the grace period it is rolled back.
func (a *Agent) guard(ctx context.Context, trial <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-trial:
		}
		for {
			version, pipes := a.c.Applier.Trial()
			if version == 0 {
				break
			}
			if a.watch(ctx, version, pipes, trial) {
				break // decided, or ctx done
			}
			// A newer bundle came meanwhile: watch it instead.
		}
	}
}

// watch decides about version: it returns false if a newer bundle came
// meanwhile (from trial), true once decided or ctx is done.
func (a *Agent) watch(ctx context.Context, version uint64, pipes map[string]string, trial <-chan struct{}) bool {
	deadline := time.NewTimer(a.c.GracePeriod)
	defer deadline.Stop()
	tick := time.NewTicker(a.c.CheckEvery)
	defer tick.Stop()
	for {
		down, why := a.down(pipes)
		if down == "" {
			if err := a.c.Applier.Healthy(version); err != nil {
				a.c.Logger.Error("fleet: cannot record a healthy bundle", "version", version, "err", err)
			}
			return true
		}
		select {
		case <-ctx.Done():
			return true
		case <-trial:
			if v, _ := a.c.Applier.Trial(); v != version {
				return false
			}
		case <-tick.C:
		case <-deadline.C:
			reason := "pipeline " + down + " not up within the grace period " + a.c.GracePeriod.String() + ": " + why
			a.c.Applier.Rollback(version, reason) //nolint:errcheck // reported by Rollback
			return true
		}
	}
}

// down returns the first pipeline of pipes that is not up, and why; ""
// if all are.
func (a *Agent) down(pipes map[string]string) (string, string) {
	if a.c.Health == nil {
		return "", ""
	}
	for _, name := range slices.Sorted(maps.Keys(pipes)) {
		if ok, why := a.c.Health(name, pipes[name]); !ok {
			return name, why
		}
	}
	return "", ""
}
