package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// loadAgentConfig is runner.LoadAgentConfig with the fleet section
// checked too (the runtime does not know the fleet package).
func loadAgentConfig(path string) (runner.AgentConfig, error) {
	cfg, err := runner.LoadAgentConfig(path)
	if err != nil {
		return cfg, err
	}
	if _, err := fleetConfig(cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// fleetConfig returns the agent file's fleet section; nil if it has none.
func fleetConfig(cfg runner.AgentConfig) (*fleet.Config, error) {
	if !cfg.Fleet.Present() {
		return nil, nil
	}
	fc, err := fleet.ParseConfig(cfg.Fleet)
	if err != nil {
		return nil, err
	}
	return &fc, nil
}

// newFleet returns the agent's fleet client, its applier open (an
// interrupted bundle finished), or nil when the agent file has no fleet
// section. Its Run follows the channel.
func newFleet(cfg runner.AgentConfig, sup *supervisor.Supervisor, metrics *runner.Metrics, log *slog.Logger, secrets *agent.Secrets) (*fleet.Agent, *fleet.Applier, error) {
	fc, err := fleetConfig(cfg)
	if fc == nil || err != nil {
		return nil, nil, err
	}
	secrets.Add(agent.SecretValues(fc)...)
	keys, err := fleet.LoadKeyring(fc.PublicKeys)
	if err != nil {
		return nil, nil, err
	}
	ap := fleet.NewApplier(fleet.ApplierConfig{
		PipelinesDir: cfg.PipelinesDir, StateDir: filepath.Join(cfg.DataDir, "fleet"), Keys: keys,
		Validate: sup.ValidatePipeline, OnConflict: fc.OnConflict, Logger: log, Metrics: metrics,
	})
	if err := ap.Open(); err != nil {
		return nil, nil, err
	}
	ch, err := fleet.NewChannel(*fc, fleet.Deps{Name: cfg.Name, Logger: log, Metrics: metrics, Secrets: secrets})
	if err != nil {
		return nil, nil, err
	}
	return fleet.NewAgent(fleet.AgentConfig{Applier: ap, Channel: ch, Targets: fleet.Targets(cfg.Name, cfg.Labels),
		Health: sup.Health, GracePeriod: fc.GracePeriod, Logger: log}), ap, nil
}

// runFleet runs f until ctx is done; f nil runs nothing.
func runFleet(ctx context.Context, f *fleet.Agent, log *slog.Logger) {
	if f == nil {
		return
	}
	if err := f.Run(ctx); err != nil {
		log.Error("fleet: config channel stopped", "err", fmt.Errorf("fleet: %w", err))
	}
}
