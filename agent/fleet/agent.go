package fleet

import (
	"context"
	"log/slog"
)

// Agent is an agent's side of the fleet: it takes the bundles of its
// targets from a channel and hands them to its Applier.
type Agent struct {
	applier *Applier
	channel Channel
	targets []string
	log     *slog.Logger
}

// NewAgent returns an agent's fleet client; it starts nothing until Run.
// The applier must be open.
func NewAgent(a *Applier, ch Channel, targets []string, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{applier: a, channel: ch, targets: targets, log: log}
}

// Run follows the channel until ctx is done. A bundle refused is
// reported by the applier (log, metric, status); the next one is taken as
// it comes.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("fleet: following the config channel", "targets", a.targets, "bundle_version", a.applier.Version())
	return a.channel.Run(ctx, a.targets, func(target string, raw []byte) {
		a.log.Debug("fleet: bundle received", "target", target, "bytes", len(raw))
		a.applier.Apply(raw) //nolint:errcheck // reported by Apply
	})
}
