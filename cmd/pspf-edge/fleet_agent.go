package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"

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
	fc, err := fleetConfig(cfg)
	if err != nil {
		return cfg, err
	}
	if _, err := heartbeatSink(fc, newRegistry()); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// heartbeatSink parses the heartbeat's sink; nil if there is none. Its
// encoding must be raw: a heartbeat is a JSON document of its own.
func heartbeatSink(fc *fleet.Config, reg *runner.Registry) (*runner.ComponentSpec, error) {
	if fc == nil || !fc.Heartbeat.Sink.Present() {
		return nil, nil
	}
	spec, err := reg.ParseSink(fc.Heartbeat.Sink)
	if err != nil {
		return nil, err
	}
	if enc := reflect.ValueOf(spec.Config).Elem().FieldByName("Encoding"); enc.IsValid() && enc.Kind() == reflect.String && enc.String() != "raw" {
		return nil, fmt.Errorf("%s: encoding must be raw for heartbeats (a heartbeat is a JSON document), got %q", spec.Place, enc.String())
	}
	return spec, nil
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
	runner.WarnInsecureTLS(log.With("component", "fleet"), "fleet", fc)
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

// newHeartbeats returns the agent's heartbeat sender, or nil when the
// agent file has no fleet.heartbeat.sink.
func newHeartbeats(cfg runner.AgentConfig, reg *runner.Registry, sup *supervisor.Supervisor, ap *fleet.Applier, metrics *runner.Metrics, log *slog.Logger, secrets *agent.Secrets) (*fleet.Heartbeats, error) {
	fc, err := fleetConfig(cfg)
	if err != nil {
		return nil, err
	}
	spec, err := heartbeatSink(fc, reg)
	if spec == nil || err != nil {
		return nil, err
	}
	secrets.Add(agent.SecretValues(spec.Config)...)
	runner.WarnInsecureTLS(log.With("component", "fleet.heartbeat.sink"), "fleet.heartbeat.sink."+spec.Type, spec.Config)
	return fleet.NewHeartbeats(fleet.HeartbeatDeps{Config: fc.Heartbeat, Sink: spec, Registry: reg, Name: cfg.Name, Labels: cfg.Labels,
		Version: version, DataDir: cfg.DataDir, Views: sup.Views, Applier: ap, Logger: log, Metrics: metrics, Secrets: secrets}), nil
}

// runFleet runs f and hb until ctx is done; nil ones run nothing.
func runFleet(ctx context.Context, f *fleet.Agent, hb *fleet.Heartbeats, log *slog.Logger) {
	var wg sync.WaitGroup
	if hb != nil {
		wg.Go(func() {
			if err := hb.Run(ctx); err != nil {
				log.Error("fleet: heartbeats stopped", "err", err)
			}
		})
	}
	if f != nil {
		if err := f.Run(ctx); err != nil {
			log.Error("fleet: config channel stopped", "err", fmt.Errorf("fleet: %w", err))
		}
	}
	wg.Wait()
}

// fleetStatusFunc returns the admin API's view of the fleet applier,
// secrets masked; nil without one.
func fleetStatusFunc(ap *fleet.Applier, secrets *agent.Secrets) func() fleet.Status {
	if ap == nil {
		return nil
	}
	return func() fleet.Status {
		st := ap.Status()
		st.RolledBackReason = secrets.Text(st.RolledBackReason)
		if st.LastRefused != nil {
			st.LastRefused.Error = secrets.Text(st.LastRefused.Error)
		}
		return st
	}
}
