package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// HeartbeatConfig is the fleet section's heartbeat: a small status record
// sent every interval and on every change, through a sink like any
// pipeline's (so it is buffered on disk through an outage).
type HeartbeatConfig struct {
	// Interval is the time between two heartbeats when nothing changes.
	Interval time.Duration `yaml:"interval" min:"1s" max:"24h" doc:"time between two heartbeats when nothing changes; a change sends one at once"`
	// Sink is a sink entry, as in a pipeline file, with encoding: raw:
	// the heartbeat is a JSON document. Its record key is the agent's
	// name: a topic of {_key} (MQTT, retained) or a compacted Kafka topic
	// keeps the latest of each agent.
	Sink agent.Node `yaml:"sink" doc:"where heartbeats go: a sink entry as in a pipeline file (mqtt with retain: true and topic pspf/fleet/heartbeats/{_key}, or kafka), with encoding: raw"`
}

// DefaultHeartbeatInterval is the heartbeat interval where none is given.
const DefaultHeartbeatInterval = 60 * time.Second

// HeartbeatPipeline is the name of the heartbeat's own pipeline: its
// metrics go by it and its log is DATA_DIR/fleet/heartbeat. A pipeline file
// cannot take this name (a '/' is not allowed in pipeline names), so the
// heartbeat's metrics never mix with a user pipeline's.
const HeartbeatPipeline = "fleet/heartbeat"

// heartbeatBuffer is the heartbeat log: 1 MiB holds about a thousand
// heartbeats, 17 hours at the default interval; beyond it the oldest go
// (counted as overflow_oldest): only the latest of an agent matters.
var heartbeatBuffer = runner.BufferConfig{Kind: "disk", MaxBytes: 1 << 20, Overflow: "drop_oldest", Sync: "interval",
	SyncInterval: time.Second, SegmentBytes: 64 << 10, MemoryBytes: 64 << 10}

// Heartbeat is what an agent sends about itself.
type Heartbeat struct {
	Agent  string            `json:"agent"`
	Labels map[string]string `json:"labels,omitempty"`
	// AgentVersion is the pspf-edge version the agent runs.
	AgentVersion string `json:"version"`
	// Seq counts the heartbeats of this run of the agent.
	Seq    uint64    `json:"seq"`
	SentAt time.Time `json:"sent_at"`
	// UptimeSeconds is the time since the agent started.
	UptimeSeconds int64 `json:"uptime_s"`
	Status
	Pipelines []PipelineBeat `json:"pipelines"`
}

// PipelineBeat is one pipeline in a heartbeat.
type PipelineBeat struct {
	Name           string `json:"name"`
	State          string `json:"state"`
	BacklogRecords uint64 `json:"backlog_records,omitempty"`
	BacklogBytes   int64  `json:"backlog_bytes,omitempty"`
	// OldestUnsentSeconds is the age of the oldest record not delivered.
	OldestUnsentSeconds float64 `json:"oldest_unsent_s,omitempty"`
	// OfflineSince is when its longest current sink outage began.
	OfflineSince time.Time         `json:"offline_since,omitzero"`
	Drops        map[string]uint64 `json:"drops,omitempty"`
	LastError    string            `json:"last_error,omitempty"`
}

// HeartbeatDeps is what a heartbeat sender is built from.
type HeartbeatDeps struct {
	Config   HeartbeatConfig
	Sink     *runner.ComponentSpec // the parsed Config.Sink
	Registry *runner.Registry      // builds the sink
	Name     string
	Labels   map[string]string
	Version  string
	DataDir  string // the agent's
	Views    func() []supervisor.PipelineView
	Applier  *Applier // nil: no bundle fields
	Logger   *slog.Logger
	Metrics  *runner.Metrics
	Secrets  *agent.Secrets
	// CheckEvery is how often a change is looked for; 0 means 1s.
	CheckEvery time.Duration
}

// Heartbeats sends heartbeats through a pipeline of its own: a source
// that makes them, a small log, the configured sink.
type Heartbeats struct {
	d       HeartbeatDeps
	started time.Time
}

// NewHeartbeats returns a sender; it starts nothing until Run.
func NewHeartbeats(d HeartbeatDeps) *Heartbeats {
	if d.Config.Interval <= 0 {
		d.Config.Interval = DefaultHeartbeatInterval
	}
	if d.CheckEvery <= 0 {
		d.CheckEvery = time.Second
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Heartbeats{d: d, started: time.Now()}
}

// Run runs the heartbeat pipeline until ctx is done; a pipeline that
// fails is started again after a backoff.
func (h *Heartbeats) Run(ctx context.Context) error {
	reg := runner.NewRegistry()
	reg.Sinks = h.d.Registry.Sinks
	reg.ReadFile = h.d.Registry.ReadFile
	src := &beatSource{h: h}
	reg.Sources["fleet_heartbeat"] = agent.Factory[agent.Source]{
		Config: func() any { return &struct{}{} },
		New:    func(any, agent.Env) (agent.Source, error) { return src, nil },
	}
	spec := &runner.PipelineSpec{Name: HeartbeatPipeline, File: "(agent file: fleet.heartbeat)", Hash: "heartbeat",
		Sources: []runner.ComponentSpec{{Type: "fleet_heartbeat", Name: "heartbeat", Config: &struct{}{}}},
		Sinks:   []runner.ComponentSpec{*h.d.Sink}, Buffer: heartbeatBuffer,
		State: runner.StateConfig{Store: runner.StoreMemory}}
	bo := agent.Backoff{Initial: time.Second, Max: time.Minute}
	for gen := 1; ; gen++ {
		p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Logger: h.d.Logger, Metrics: h.d.Metrics,
			DataDir: filepath.Join(h.d.DataDir, "fleet", "heartbeat"), AgentName: h.d.Name, OpenLog: runner.OpenDiskLog(h.d.Logger),
			ShutdownTimeout: 2 * time.Second, Generation: gen, Secrets: h.d.Secrets})
		if err == nil {
			err = p.Run(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		h.d.Logger.Warn("fleet: heartbeat pipeline failed; starting it again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(bo.Next()):
		}
	}
}

// Make returns the heartbeat as of now.
func (h *Heartbeats) Make(seq uint64) Heartbeat {
	now := time.Now()
	hb := Heartbeat{Agent: h.d.Name, Labels: h.d.Labels, AgentVersion: h.d.Version, Seq: seq, SentAt: now.UTC().Truncate(time.Millisecond),
		UptimeSeconds: int64(now.Sub(h.started).Seconds()), Pipelines: []PipelineBeat{}}
	if h.d.Applier != nil {
		hb.Status = h.d.Applier.Status()
		hb.Hash = hb.Hash[:min(12, len(hb.Hash))] // enough to tell bundles apart, a quarter of the bytes
		hb.RolledBackReason = h.d.Secrets.Text(hb.RolledBackReason)
		if r := hb.LastRefused; r != nil {
			r.Error = h.d.Secrets.Text(r.Error)
		}
	}
	if h.d.Views == nil {
		return hb
	}
	for _, v := range h.d.Views() {
		pb := PipelineBeat{Name: v.Name, State: v.State, BacklogRecords: v.BacklogRecords, BacklogBytes: v.BacklogBytes,
			OldestUnsentSeconds: v.OldestUnsentSeconds, LastError: h.d.Secrets.Text(v.LastError)}
		if v.LastReloadError != "" {
			pb.LastError = h.d.Secrets.Text(v.LastReloadError)
		}
		var offline float64
		for _, s := range v.Sinks {
			offline = max(offline, s.OfflineSeconds)
		}
		if offline > 0 {
			pb.OfflineSince = now.Add(-time.Duration(offline * float64(time.Second))).UTC().Truncate(time.Second)
		}
		for k, n := range v.Drops {
			if n > 0 {
				if pb.Drops == nil {
					pb.Drops = map[string]uint64{}
				}
				pb.Drops[k] = n
			}
		}
		hb.Pipelines = append(hb.Pipelines, pb)
	}
	return hb
}

// changeKey is what a change is: versions, states, outages, errors; not
// the counts that move all the time.
func changeKey(hb Heartbeat) string {
	k := fmt.Sprintf("%s|%d|%s|%d|%s|%v", hb.AgentVersion, hb.Status.Version, hb.Hash, hb.RolledBack, hb.RolledBackReason, hb.OnTrial)
	if hb.LastRefused != nil {
		k += "|" + hb.LastRefused.Error
	}
	for _, p := range hb.Pipelines {
		k += fmt.Sprintf("|%s:%s:%v:%s:%v", p.Name, p.State, p.OfflineSince.IsZero(), p.LastError, slicesOfKeys(p.Drops))
	}
	return k
}

func slicesOfKeys(m map[string]uint64) []string {
	var out []string
	for k := range maps.Keys(m) {
		out = append(out, k)
	}
	return out
}

// beatSource makes the heartbeats: one at the start, then one every
// interval, and one as soon as changeKey differs from the last one sent.
type beatSource struct {
	h    *Heartbeats
	mu   sync.Mutex
	seq  uint64
	last string
	next time.Time
}

func (s *beatSource) Connect(context.Context) error { return nil }
func (s *beatSource) Close(context.Context) error   { return nil }

func (s *beatSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	t := time.NewTicker(s.h.d.CheckEvery)
	defer t.Stop()
	for {
		s.mu.Lock()
		hb := s.h.Make(s.seq + 1)
		key := changeKey(hb)
		due := key != s.last || !time.Now().Before(s.next)
		if due {
			s.seq++
			s.last, s.next = key, time.Now().Add(s.h.d.Interval())
		}
		s.mu.Unlock()
		if due {
			raw, err := json.Marshal(hb)
			if err != nil {
				return nil, nil, fmt.Errorf("fleet: heartbeat: %w", err)
			}
			now := time.Now().UnixNano()
			rec := agent.Record{Key: hb.Agent, Source: "heartbeat", EventTime: now, RecvTime: now, Raw: raw}
			return []agent.Record{rec}, func(context.Context, error) {}, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Interval returns the heartbeat interval.
func (d HeartbeatDeps) Interval() time.Duration { return d.Config.Interval }
