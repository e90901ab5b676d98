package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// Pipeline states shown by status.
const (
	StateRunning    = "running"
	StateFailed     = "failed"     // no valid config yet, or it could not start
	StateRestarting = "restarting" // it failed; it is started again after a backoff (restart.go)
	StateStopped    = "stopped"    // its file was removed, or its sources ended
)

// Deps is what a Supervisor is built from.
type Deps struct {
	// Config is the agent config at start (command-line overrides applied).
	Config runner.AgentConfig
	// LoadConfig re-reads the agent config with the same overrides; nil
	// means the agent config never changes.
	LoadConfig func() (runner.AgentConfig, error)
	// ConfigFile is the agent file to watch; empty watches none.
	ConfigFile string
	// Registry builds the pipelines' components.
	Registry *runner.Registry
	// Metrics receives the supervisor's and the pipelines' metrics.
	Metrics *runner.Metrics
	// Logger is the agent's logger.
	Logger *slog.Logger
	// Level is the level of Logger, changed when the agent file's changes;
	// nil means a level of the supervisor's own, which Logger ignores.
	Level *slog.LevelVar
	// OpenLog opens pipeline logs; nil means runner.OpenDiskLog.
	OpenLog runner.OpenLogFunc
	// Poll rescans the pipelines at this interval as a safety net for a
	// lost file-system event; 0 disables it.
	Poll time.Duration
	// SampleEvery is how often backlogs are sampled for rates and ages; 0
	// means one second.
	SampleEvery time.Duration
	// Notify sends a state to the service manager (sd_notify: READY=1,
	// RELOADING=1, WATCHDOG=1, STOPPING=1); nil sends nothing.
	Notify func(state string)
	// Secrets is the agent's set of secret values: every pipeline adds its
	// own, and the supervisor masks them, and every URL password, in its
	// log lines and in the views (last errors, reload errors, restart
	// causes). Nil means a set of the supervisor's own.
	Secrets *agent.Secrets
	// Watchdog is how often the supervisor's loop sends WATCHDOG=1 once
	// ready; 0 sends none. The pings come from the loop itself, so that a
	// supervisor stuck in a reload stops them and the service manager
	// restarts the agent. While the loop waits for a generation to stop,
	// which may rightly take up to the drain timeout, it keeps pinging up
	// to that bound (watchdog.go), so a watchdog shorter than
	// shutdown_timeout is fine.
	Watchdog time.Duration
	// Now is the clock of the views (ages, offline times, start times) and
	// of the pipelines (runner.PipelineDeps.Now); nil means time.Now.
	// Reload debouncing and restart backoff run on timers, by the wall
	// clock.
	Now func() time.Time
}

// Supervisor runs one pipeline per file of the pipelines directory and keeps
// them in step with the files: a new file starts a pipeline, a changed one
// reloads it (alone: the others never pause), a removed one drains and stops.
// A file that does not validate never replaces a running generation.
type Supervisor struct {
	d       Deps
	dataDir string // fixed at start: it holds the lock
	ready   atomic.Bool
	wg      sync.WaitGroup // the pipelines' Run goroutines

	agentFailures *agent.Counter

	// setupFailed receives a pipeline whose generation on probation failed
	// to set up; the loop rolls it back.
	setupFailed chan *managed
	// restartWake wakes the loop when a restart is scheduled (restart.go);
	// restartT fires when the earliest is due (loop only).
	restartWake chan struct{}
	restartT    *time.Timer
	// states hands the memory state stores from one generation of a
	// pipeline to the next.
	states runner.StateKeeper

	mu      sync.Mutex // guards what follows and every managed's fields
	cfg     runner.AgentConfig
	cfgHash string
	pipes   map[string]*managed
	recheck bool // a file went missing: look again after the debounce

	clock *sampleClock // when backlogs are sampled
}

// managed is one pipeline name's history: the generation running, the last
// file content seen, the last reload error.
type managed struct {
	name       string
	file       string
	seen       string               // key of the last content read, valid or not
	runKey     string               // key of the content running
	invalidKey string               // invalid content waiting to be read again
	spec       *runner.PipelineSpec // the config running (or that ran last)
	gen        int
	run        *generation
	reloadErr  string
	missing    time.Time // when its file was first found missing
	removed    bool
	stopping   chan struct{}                // closed when a removal's drain ends
	final      *runner.Status               // the last generation's status, once stopped
	logDrops   map[string]uint64            // log drops of past generations
	track      backlogTracker               // rates and ages of the log
	failures   *agent.Counter               // pspf_reload_failures_total
	reloads    *agent.Counter               // pspf_reloads_total
	sinkGauge  map[string]bool              // sinks with registered gauges
	view       atomic.Pointer[PipelineView] // last computed view, for gauges
	probation  *probation                   // a reloaded generation not proven yet
	restart    *restart                     // a pending start after a failure (restart.go)
	restartBO  agent.Backoff                // delays between restarts
	restarts   *agent.Counter               // pspf_pipeline_restarts_total
}

// probation is a reloaded generation that has not connected yet: a setup
// error of one of its components (runner.Pipeline.Started) rolls it back to
// the config that ran before it.
type probation struct {
	g    *generation
	spec *runner.PipelineSpec // the config to go back to
	gen  int
	key  string
}

// generation is one run of a pipeline config.
type generation struct {
	p       *runner.Pipeline
	gen     int
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // Run's result, set before done is closed
	started time.Time
}

func (g *generation) alive() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// stop ends the generation as o says and waits for it.
func (g *generation) stop(o runner.StopOptions) error {
	g.p.SetStop(o)
	g.cancel()
	<-g.done
	return g.err
}

// New returns a supervisor; it starts nothing until Run. Deps.Config,
// Registry, Metrics and Logger are required.
func New(d Deps) *Supervisor {
	if d.Secrets == nil {
		d.Secrets = new(agent.Secrets)
	}
	d.Secrets.Add(agent.SecretValues(&d.Config)...) // the admin token
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	d.Logger = slog.New(agent.RedactHandler(d.Logger.Handler(), d.Secrets))
	if d.OpenLog == nil {
		d.OpenLog = runner.OpenDiskLog(d.Logger)
	}
	if d.SampleEvery <= 0 {
		d.SampleEvery = time.Second
	}
	if d.Level == nil {
		d.Level = new(slog.LevelVar)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Supervisor{d: d, dataDir: d.Config.DataDir, cfg: d.Config, pipes: map[string]*managed{}, setupFailed: make(chan *managed),
		restartWake: make(chan struct{}, 1), clock: newSampleClock(d.SampleEvery)}
	s.agentFailures = d.Metrics.Counter("pspf_agent_config_reload_failures_total")
	if d.ConfigFile != "" {
		if data, err := os.ReadFile(d.ConfigFile); err == nil {
			s.cfgHash = hashBytes(data)
		}
	}
	return s
}

func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Config returns the agent config in effect: the one it started with, and
// the settings a reload of the agent file changed live (see
// reloadAgentConfig). The admin API reads its token from it.
func (s *Supervisor) Config() runner.AgentConfig {
	return s.config()
}

// config returns the current agent config.
func (s *Supervisor) config() runner.AgentConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Run starts every pipeline, then follows the files, SIGHUP (hup) and the
// agent file until ctx is done; then it stops every pipeline (draining within
// the shutdown timeout) and returns once all have ended.
func (s *Supervisor) Run(ctx context.Context, hup <-chan os.Signal) error {
	cfg := s.config()
	dirs := []string{cfg.PipelinesDir}
	st, err := os.Stat(cfg.PipelinesDir)
	if err != nil {
		return fmt.Errorf("pipelines: %w", err)
	} else if !st.IsDir() {
		dirs = []string{filepath.Dir(cfg.PipelinesDir)}
	}
	if s.d.ConfigFile != "" {
		dirs = append(dirs, filepath.Dir(s.d.ConfigFile))
	}
	w, err := newDirWatcher(cfg.ReloadDebounce, s.d.Logger, configPaths(cfg.PipelinesDir, st.IsDir(), s.d.ConfigFile), dirs...)
	if err != nil {
		return err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	var watchWG sync.WaitGroup
	watchWG.Go(func() { w.run(wctx) })
	defer func() { stopWatch(); watchWG.Wait() }()

	s.sync(ctx, false)
	s.ready.Store(true)
	s.notify("READY=1")
	s.d.Logger.Info("supervisor watching", "pipelines", cfg.PipelinesDir, "agent_file", s.d.ConfigFile)
	var watchdog <-chan time.Time
	if s.d.Watchdog > 0 {
		s.notify("WATCHDOG=1")
		t := time.NewTicker(s.d.Watchdog)
		defer t.Stop()
		watchdog = t.C
	}

	var poll <-chan time.Time
	if s.d.Poll > 0 {
		t := time.NewTicker(s.d.Poll)
		defer t.Stop()
		poll = t.C
	}
	sampleEvery := s.d.SampleEvery
	sample := time.NewTimer(sampleEvery)
	defer sample.Stop()
	s.clock.sampled(sampleEvery, false)
	var recheck <-chan time.Time
	restartC := s.restartTimer()
	for {
		select {
		case <-ctx.Done():
			s.ready.Store(false)
			s.notify("STOPPING=1")
			return s.stopAll(watchdog)
		case <-watchdog:
			s.notify("WATCHDOG=1")
		case <-w.Changed():
			s.reloadAgentConfig(false)
			s.sync(ctx, false)
		case <-hup:
			// RELOADING=1 (with MONOTONIC_USEC) ... READY=1 tells systemd
			// when `systemctl reload` is done.
			s.notify("RELOADING=1")
			s.d.Logger.Info("SIGHUP: reloading the agent config and every pipeline")
			s.reloadAgentConfig(true)
			s.sync(ctx, true)
			s.notify("READY=1")
		case <-poll:
			s.sync(ctx, false)
		case <-recheck:
			recheck = nil
			s.sync(ctx, false)
		case m := <-s.setupFailed:
			s.rollback(ctx, m)
		case <-s.restartWake:
		case <-restartC:
			s.restartDue(ctx)
		case <-sample.C:
			sampleEvery = s.sampleOnTimer(sample, sampleEvery, s.sample)
		case <-s.clock.ask:
			sampleEvery = s.sampleOnAsk(sample, sampleEvery, s.sample)
		}
		s.mu.Lock()
		if s.recheck && recheck == nil {
			recheck = time.After(max(s.cfg.ReloadDebounce, 50*time.Millisecond))
		}
		s.recheck = false
		s.mu.Unlock()
		restartC = s.restartTimer()
	}
}

// reloadAgentConfig re-reads the agent file if its content changed, or
// always with force (SIGHUP: a file its ${file:} names may have changed):
// the log level, the timeouts and the admin token change live; a change
// of anything else is logged as needing a restart; a change of the
// pipeline defaults reloads the pipelines (their key includes the
// defaults).
func (s *Supervisor) reloadAgentConfig(force bool) {
	if s.d.ConfigFile == "" || s.d.LoadConfig == nil {
		return
	}
	data, err := os.ReadFile(s.d.ConfigFile)
	if err != nil {
		s.agentFailures.Inc()
		s.d.Logger.Error("agent config: cannot read; keeping the running config", "file", s.d.ConfigFile, "err", err)
		return
	}
	h := hashBytes(data)
	s.mu.Lock()
	same := h == s.cfgHash
	s.mu.Unlock()
	if same && !force {
		return
	}
	next, err := s.d.LoadConfig()
	if err == nil {
		_, err = next.Log.SlogLevel()
	}
	if err != nil {
		s.agentFailures.Inc()
		s.d.Logger.Error("agent config invalid; keeping the running config", "file", s.d.ConfigFile, "err", err)
		return
	}
	s.d.Secrets.Add(agent.SecretValues(&next)...)
	s.mu.Lock()
	prev := s.cfg
	s.cfgHash = h
	restart := restartNeeded(prev, next)
	// What cannot change live keeps its running value.
	token := next.Admin.Token
	next.DataDir, next.Admin, next.PipelinesDir, next.Name, next.Log.Format = prev.DataDir, prev.Admin, prev.PipelinesDir, prev.Name, prev.Log.Format
	next.Admin.Token = token
	next.MemoryLimit, next.GCPercent = prev.MemoryLimit, prev.GCPercent
	next.Labels, next.Fleet = prev.Labels, prev.Fleet
	s.cfg = next
	s.mu.Unlock()
	if next.Log.Level != prev.Log.Level {
		lv, _ := next.Log.SlogLevel()
		s.d.Level.Set(lv)
	}
	// One line says what changed: what took effect, and what waits for a
	// restart.
	live := liveChanges(prev, next)
	if same && len(live) == 0 && len(restart) == 0 {
		return // SIGHUP, and nothing changed
	}
	if len(live) == 0 {
		live = []string{"nothing that applies live"}
	}
	attrs := []any{"file", s.d.ConfigFile, "changed", strings.Join(live, ", ")}
	if len(restart) > 0 {
		attrs = append(attrs, "restart_needed", strings.Join(restart, ", "))
		s.d.Logger.Warn("agent config reloaded; some settings change only on restart", attrs...)
		return
	}
	s.d.Logger.Info("agent config reloaded", attrs...)
}

// liveChanges lists the settings that differ and change live, with their
// new values.
func liveChanges(a, b runner.AgentConfig) []string {
	var out []string
	if a.Log.Level != b.Log.Level {
		out = append(out, "log.level="+b.Log.Level)
	}
	if a.Admin.Token != b.Admin.Token {
		out = append(out, "admin.token (replaced)")
	}
	if a.ShutdownTimeout != b.ShutdownTimeout {
		out = append(out, "shutdown_timeout="+b.ShutdownTimeout.String())
	}
	if a.RemovedDrainTimeout != b.RemovedDrainTimeout {
		out = append(out, "removed_drain_timeout="+b.RemovedDrainTimeout.String())
	}
	if fmt.Sprintf("%+v", a.Defaults) != fmt.Sprintf("%+v", b.Defaults) {
		out = append(out, "defaults (the pipelines they apply to reload)")
	}
	return out
}

// restartNeeded lists the settings that differ and cannot change live.
func restartNeeded(a, b runner.AgentConfig) []string {
	var out []string
	if !maps.Equal(a.Labels, b.Labels) {
		out = append(out, "labels")
	}
	if canonical(a.Fleet) != canonical(b.Fleet) {
		out = append(out, "fleet")
	}
	if a.DataDir != b.DataDir {
		out = append(out, "data_dir")
	}
	if a.Admin.Address != b.Admin.Address {
		out = append(out, "admin.address")
	}
	if a.Admin.TLS != b.Admin.TLS {
		out = append(out, "admin.tls")
	}
	if !slices.Equal(a.Admin.AllowedHosts, b.Admin.AllowedHosts) {
		out = append(out, "admin.allowed_hosts")
	}
	if a.PipelinesDir != b.PipelinesDir {
		out = append(out, "pipelines_dir")
	}
	if a.Name != b.Name {
		out = append(out, "name")
	}
	if a.Log.Format != b.Log.Format {
		out = append(out, "log.format")
	}
	if a.ReloadDebounce != b.ReloadDebounce {
		out = append(out, "reload_debounce")
	}
	if a.MemoryLimit != b.MemoryLimit {
		out = append(out, "memory_limit")
	}
	if a.GCPercent != b.GCPercent {
		out = append(out, "gc_percent")
	}
	if a.MaxProcs != b.MaxProcs {
		out = append(out, "max_procs")
	}
	if a.TimerSlack != b.TimerSlack {
		out = append(out, "timer_slack")
	}
	return out
}

// pipelineFiles lists the pipeline files named by path: the files of a
// directory, or the one file.
func pipelineFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("pipelines: %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	return runner.PipelineFiles(path)
}

// sync brings the pipelines in step with the files. force restarts every
// valid pipeline even if its file is unchanged (SIGHUP: a secret named by
// ${file:...} may have changed).
func (s *Supervisor) sync(ctx context.Context, force bool) {
	if s.d.Watchdog > 0 && s.ready.Load() {
		// A reload may block the loop for up to the shutdown timeout: the
		// watchdog's clock starts now, not at the last tick.
		s.notify("WATCHDOG=1")
	}
	cfg := s.config()
	files, err := pipelineFiles(cfg.PipelinesDir)
	if err != nil {
		// A directory being swapped or unreadable is not "every file was
		// removed": keep everything running.
		s.d.Logger.Error("pipelines: cannot list; keeping every pipeline running", "err", err)
		return
	}
	defaultsKey := fmt.Sprintf("%+v", cfg.Defaults)
	present := map[string]bool{}
	for _, f := range files {
		name := runner.PipelineName(f)
		if present[name] {
			s.d.Logger.Error("pipeline file ignored: another file has the same name", "file", f, "pipeline", name)
			continue
		}
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // gone between the listing and the read: like missing
		}
		present[name] = true
		s.apply(ctx, name, f, data, err, defaultsKey, cfg, force)
	}
	s.mu.Lock()
	var gone []*managed
	for name, m := range s.pipes {
		if present[name] || m.removed {
			continue
		}
		// Delete-and-create and directory swaps leave a file missing for a
		// moment: remove a pipeline only when its file is still missing
		// after the debounce time.
		if m.missing.IsZero() {
			m.missing = time.Now()
			s.recheck = true
			continue
		}
		if time.Since(m.missing) < cfg.ReloadDebounce {
			s.recheck = true
			continue
		}
		gone = append(gone, m)
	}
	s.mu.Unlock()
	for _, m := range gone {
		s.remove(m, cfg)
	}
}

// apply handles one file's content.
func (s *Supervisor) apply(ctx context.Context, name, file string, data []byte, readErr error, defaultsKey string, cfg runner.AgentConfig, force bool) {
	key := ""
	if readErr == nil {
		key = hashBytes(data) + "/" + hashBytes([]byte(defaultsKey))
	}
	s.mu.Lock()
	m := s.managedLocked(name)
	m.missing = time.Time{}
	running := m.run != nil && m.run.alive()
	if key != "" && key == m.seen && !force {
		s.mu.Unlock()
		return // a save that changed nothing
	}
	m.seen = key
	m.file = file
	stopping := m.stopping
	s.mu.Unlock()

	spec, ok := s.parse(m, file, data, readErr, key, cfg)
	if !ok {
		return
	}
	if stopping != nil {
		<-stopping // a removal of the same name must have closed its logs
	}

	s.mu.Lock()
	m.invalidKey = ""
	if running && m.runKey == key && !force {
		// Back to the running content after an invalid save.
		m.reloadErr = ""
		s.mu.Unlock()
		return
	}
	prev := previous{spec: m.spec, run: m.run, key: m.runKey}
	m.probation = nil // superseded: this reload has its own
	s.mu.Unlock()
	s.replace(ctx, m, spec, key, prev, cfg)
}

// managedLocked returns the pipeline called name, new if there is none.
// s.mu is held.
func (s *Supervisor) managedLocked(name string) *managed {
	m := s.pipes[name]
	if m == nil {
		m = &managed{name: name, logDrops: map[string]uint64{}, sinkGauge: map[string]bool{},
			failures:  s.d.Metrics.Counter("pspf_reload_failures_total", "pipeline", name),
			reloads:   s.d.Metrics.Counter("pspf_reloads_total", "pipeline", name),
			restarts:  s.d.Metrics.Counter("pspf_pipeline_restarts_total", "pipeline", name),
			restartBO: agent.Backoff{Initial: restartInitial, Max: restartMax}}
		s.pipes[name] = m
		s.registerGauges(m)
	}
	return m
}

// parse parses m's file content (key identifies it), or takes readErr. A
// content that does not parse is judged only when the same content is read
// again after the debounce time, since a tool may be half-way through
// writing the file (an in-place save, delete and create); then the failure
// is recorded and the running generation stays.
func (s *Supervisor) parse(m *managed, file string, data []byte, readErr error, key string, cfg runner.AgentConfig) (*runner.PipelineSpec, bool) {
	var spec *runner.PipelineSpec
	err := readErr
	if err == nil {
		spec, err = s.d.Registry.ParsePipeline(file, data, cfg.Defaults)
	}
	if err == nil {
		return spec, true
	}
	s.mu.Lock()
	settled := key == m.invalidKey
	if !settled {
		m.invalidKey, m.seen = key, ""
		s.recheck = true
	}
	s.mu.Unlock()
	if settled {
		s.fail(m, fmt.Errorf("pipeline %q: %w", m.name, err), "pipeline config invalid; the running generation stays")
	}
	return nil, false
}

// previous is the generation a reload replaces: its config, its run (nil
// if none) and its content key.
type previous struct {
	spec *runner.PipelineSpec
	run  *generation
	key  string
}

// replace stops the generation that runs (keeping its backlog) and starts
// spec as the next one. If that cannot start, the previous config runs
// again; without one, a restart is scheduled.
func (s *Supervisor) replace(ctx context.Context, m *managed, spec *runner.PipelineSpec, key string, prev previous, cfg runner.AgentConfig) {
	t0 := time.Now()
	if prev.run != nil && prev.run.alive() {
		if err := s.stop(prev.run, runner.StopOptions{KeepBacklog: true, DrainTimeout: cfg.ShutdownTimeout}); err != nil {
			s.d.Logger.Warn("pipeline generation ended with errors", "pipeline", m.name, "generation", prev.run.gen, "err", err)
		}
	}
	s.retire(m, prev.run)
	s.mu.Lock()
	gen := m.gen + 1
	s.mu.Unlock()
	g, err := s.start(ctx, m, spec, gen, cfg)
	if err != nil {
		err = fmt.Errorf("pipeline %q: start generation %d: %w", m.name, gen, err)
		if prev.spec != nil && prev.run != nil && !m.removed {
			// Roll back: the previous config runs again.
			if g2, err2 := s.start(ctx, m, prev.spec, prev.run.gen, cfg); err2 == nil {
				s.mu.Lock()
				m.run = g2
				s.mu.Unlock()
				s.fail(m, err, "pipeline reload failed; the previous config runs again")
				return
			}
		}
		s.mu.Lock()
		m.run = nil
		s.mu.Unlock()
		s.fail(m, err, "pipeline could not start")
		s.scheduleRestart(m, spec, gen, key, err, true)
		return
	}
	s.running(m, g, spec, key, prev, time.Since(t0))
}

// running records g, of spec, as m's running generation (one that
// replaces a running one is on probation until its setup succeeds), and
// logs its start, or what the reload changed and how long it took.
func (s *Supervisor) running(m *managed, g *generation, spec *runner.PipelineSpec, key string, prev previous, took time.Duration) {
	s.mu.Lock()
	wasRemoved, file := m.removed, m.file
	m.run, m.spec, m.gen, m.runKey, m.reloadErr, m.removed, m.stopping, m.final = g, spec, g.gen, key, "", false, nil, nil
	m.restart = nil
	if prev.spec != nil && prev.run != nil && !wasRemoved {
		m.probation = &probation{g: g, spec: prev.spec, gen: prev.run.gen, key: prev.key}
		s.watchSetup(m, g)
	}
	s.registerSinkGauges(m, spec)
	s.mu.Unlock()
	m.reloads.Inc()
	if prev.spec == nil || wasRemoved {
		s.d.Logger.Info("pipeline started", "pipeline", m.name, "generation", g.gen, "file", file, "hash", short(spec.Hash))
		return
	}
	ch := describeChanges(prev.spec, spec)
	if ch == "" {
		ch = "no component changed"
	}
	s.d.Logger.Info("pipeline reloaded", "pipeline", m.name, "generation", g.gen, "hash", short(spec.Hash), "changes", ch, "took", took.Round(time.Microsecond))
}
func short(h string) string { return h[:min(12, len(h))] }

// fail records a reload error: the log, the metric and the status.
func (s *Supervisor) fail(m *managed, err error, msg string) {
	m.failures.Inc()
	s.mu.Lock()
	m.reloadErr = s.d.Secrets.Text(err.Error())
	gen := m.gen
	s.mu.Unlock()
	s.d.Logger.Error(msg, "pipeline", m.name, "generation", gen, "err", err)
}

// start builds and starts a generation.
func (s *Supervisor) start(ctx context.Context, m *managed, spec *runner.PipelineSpec, gen int, cfg runner.AgentConfig) (*generation, error) {
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{
		Registry:        s.d.Registry,
		Logger:          s.d.Logger,
		Metrics:         s.d.Metrics,
		DataDir:         filepath.Join(s.dataDir, "pipelines", spec.Name),
		AgentName:       cfg.Name,
		OpenLog:         s.d.OpenLog,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Generation:      gen,
		Secrets:         s.d.Secrets,
		States:          &s.states,
		Now:             s.d.Now,
		Appended:        s.clock.appended,
	})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	g := &generation{p: p, gen: gen, cancel: cancel, done: make(chan struct{}), started: s.d.Now()}
	s.wg.Go(func() {
		defer cancel()
		g.err = p.Run(rctx)
		asked := rctx.Err() != nil // stopped by the supervisor, or its shutdown
		close(g.done)
		if !asked {
			s.ended(m, g) // restart.go
			return
		}
		if g.err != nil {
			s.d.Logger.Warn("pipeline generation ended with errors", "pipeline", m.name, "generation", gen, "err", g.err)
		}
	})
	return g, nil
}

// retire keeps what a stopped generation leaves behind for status: its final
// snapshot and its log's drops (a log counts drops only while it is open).
func (s *Supervisor) retire(m *managed, g *generation) {
	if g == nil {
		return
	}
	st := g.p.Status()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range st.Log.Drops {
		m.logDrops[k] += v
	}
	m.final = &st
	m.track.reset()
}

// remove stops a pipeline whose file is gone: its sinks deliver the backlog
// for up to removed_drain_timeout; what remains stays on disk until
// `pspf-edge buffer drop`. The drain runs in the background: the other
// pipelines, and the supervisor, carry on.
func (s *Supervisor) remove(m *managed, cfg runner.AgentConfig) {
	s.mu.Lock()
	g := m.run
	m.removed, m.seen, m.runKey, m.missing, m.reloadErr, m.probation, m.restart = true, "", "", time.Time{}, "", nil, nil
	done := make(chan struct{})
	m.stopping = done
	s.mu.Unlock()
	s.d.Logger.Info("pipeline file removed: draining, then stopping", "pipeline", m.name, "drain_timeout", cfg.RemovedDrainTimeout)
	s.wg.Go(func() {
		defer close(done)
		defer s.states.Forget(m.name) // a memory store's state goes with the pipeline
		if g == nil {
			return
		}
		if err := g.stop(runner.StopOptions{DrainTimeout: cfg.RemovedDrainTimeout}); err != nil {
			s.d.Logger.Warn("removed pipeline stopped with errors", "pipeline", m.name, "err", err)
		}
		s.retire(m, g)
		s.mu.Lock()
		defer s.mu.Unlock()
		if m.run == g {
			m.run = nil
		}
		var left uint64
		if m.final != nil {
			left = m.final.Log.Backlog
			if in := m.final.Input; in != nil {
				left += in.Backlog // not yet through the stateful operators
			}
		}
		if left > 0 {
			s.d.Logger.Warn("removed pipeline stopped with undelivered records; they stay on disk until `pspf-edge buffer drop`",
				"pipeline", m.name, "records", left, "dir", filepath.Join(s.dataDir, "pipelines", m.name))
		} else {
			s.d.Logger.Info("removed pipeline stopped; its log is delivered", "pipeline", m.name)
		}
	})
}

func (s *Supervisor) notify(state string) {
	if s.d.Notify != nil {
		s.d.Notify(state)
	}
}

// stopAll stops every pipeline (draining within the shutdown timeout: their
// contexts are done) and waits for them and for removals in progress,
// feeding the watchdog meanwhile.
func (s *Supervisor) stopAll(watchdog <-chan time.Time) error {
	done := make(chan error, 1)
	go func() { done <- s.waitAll() }()
	for {
		select {
		case err := <-done:
			return err
		case <-watchdog:
			s.notify("WATCHDOG=1")
		}
	}
}

// waitAll waits for every pipeline and every removal in progress.
func (s *Supervisor) waitAll() error {
	s.mu.Lock()
	var runs []*generation
	for _, m := range s.pipes {
		if m.run != nil {
			runs = append(runs, m.run)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, g := range runs {
		<-g.done
		if g.err != nil {
			errs = append(errs, fmt.Errorf("pipeline %q: %w", g.p.Spec().Name, g.err))
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// describeChanges says which components a reload adds, removes or changes.
func describeChanges(old, cur *runner.PipelineSpec) string {
	var parts []string
	for _, k := range []struct {
		what     string
		old, cur []runner.ComponentSpec
	}{{"source", old.Sources, cur.Sources}, {"operator", old.Operators, cur.Operators}, {"sink", old.Sinks, cur.Sinks}} {
		was := map[string]string{}
		for _, c := range k.old {
			was[c.Name] = c.Fingerprint()
		}
		is := map[string]bool{}
		for _, c := range k.cur {
			is[c.Name] = true
			fp, ok := was[c.Name]
			switch {
			case !ok:
				parts = append(parts, fmt.Sprintf("+%s %s (%s)", k.what, c.Name, c.Type))
			case fp != c.Fingerprint():
				parts = append(parts, fmt.Sprintf("~%s %s", k.what, c.Name))
			}
		}
		for _, c := range k.old {
			if !is[c.Name] {
				parts = append(parts, fmt.Sprintf("-%s %s", k.what, c.Name))
			}
		}
	}
	var od, cd string
	if old.DeadLetter != nil {
		od = old.DeadLetter.Fingerprint()
	}
	if cur.DeadLetter != nil {
		cd = cur.DeadLetter.Fingerprint()
	}
	if od != cd {
		parts = append(parts, "~dead_letter")
	}
	if old.Buffer != cur.Buffer {
		parts = append(parts, "~buffer")
	}
	if old.Checkpoint != cur.Checkpoint {
		parts = append(parts, "~checkpoint")
	}
	if old.State != cur.State {
		parts = append(parts, "~state")
	}
	if old.Description != cur.Description {
		parts = append(parts, "~description")
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// names returns the pipeline names in order.
func (s *Supervisor) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.pipes))
	for n := range s.pipes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Ready reports whether the first sync is done and every pipeline with a
// valid config is running (or has ended on its own, its sources done); if
// not, why, naming the first pipeline that is down.
func (s *Supervisor) Ready() (bool, string) {
	if !s.ready.Load() {
		return false, "starting"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range slices.Sorted(maps.Keys(s.pipes)) {
		if down, why := s.pipes[n].down(); down {
			return false, fmt.Sprintf("pipeline %q is not running: %s", n, why)
		}
	}
	return true, ""
}

// ValidatePipeline parses and validates one pipeline file's content as the
// supervisor would before running it, with the agent's current defaults.
// A fleet bundle's files are checked with it before they are written.
func (s *Supervisor) ValidatePipeline(file string, data []byte) error {
	_, err := s.d.Registry.ParsePipeline(file, data, s.config().Defaults)
	return err
}

// canonical returns a config node's content in a canonical form, to tell
// whether it changed.
func canonical(n agent.Node) string {
	var b strings.Builder
	n.WriteCanonical(&b)
	return b.String()
}

// Health reports whether the pipeline called name runs the file content
// whose SHA-256 is hash (hex) and every one of its sources and sinks has
// connected once: a fleet bundle's pipeline counts as up then. If not, why
// says what is missing (not loaded yet, another config running and the
// reload error that kept it, not connected yet, a setup error).
func (s *Supervisor) Health(name, hash string) (ok bool, why string) {
	s.mu.Lock()
	m := s.pipes[name]
	if m == nil {
		s.mu.Unlock()
		return false, "not loaded yet"
	}
	g, spec, reloadErr := m.run, m.spec, m.reloadErr
	s.mu.Unlock()
	switch {
	case spec == nil || spec.Hash != hash:
		if reloadErr != "" {
			return false, "not running this config: " + reloadErr
		}
		return false, "not running this config yet"
	case g == nil || !g.alive():
		if reloadErr != "" {
			return false, "not running: " + reloadErr
		}
		return false, "not running"
	}
	select {
	case <-g.p.Started():
	default:
		st := g.p.Status()
		if st.LastError != "" {
			return false, "not every source and sink has connected: " + s.d.Secrets.Text(st.LastError)
		}
		return false, "not every source and sink has connected yet"
	}
	if err := g.p.SetupErr(); err != nil {
		return false, "setup error: " + s.d.Secrets.Text(err.Error())
	}
	return true, ""
}
