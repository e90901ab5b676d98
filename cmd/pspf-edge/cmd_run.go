package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	return runCommand(args, stdout, stderr, realTimerSlackOS())
}

// runCommand is cmdRun with the system calls that give the agent its timer
// slack (adoptTimerSlack) given: tests give ones that do not execute.
func runCommand(args []string, stdout, stderr io.Writer, slack timerSlackOS) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "agent config file (default: built-in defaults)")
	pipes := fs.String("p", "", "pipelines directory, or one pipeline file (default: the agent file's pipelines_dir)")
	dataDir := fs.String("data-dir", "", "data directory (overrides the agent file)")
	admin := fs.String("admin", "", "admin HTTP address, host:port (overrides the agent file; an empty value disables it)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (overrides the agent file)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge run [-c agent.yaml] [-p pipelines/] [flags]\n\nRuns the agent until SIGINT or SIGTERM; a second signal forces exit.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	// --admin "" disables the API, so only a --admin given at all overrides.
	adminSet := false
	fs.Visit(func(f *flag.Flag) { adminSet = adminSet || f.Name == "admin" })
	load := func() (runner.AgentConfig, error) {
		cfg, err := loadAgentConfig(*cfgPath)
		if err != nil {
			return cfg, err
		}
		if *pipes != "" {
			cfg.PipelinesDir = *pipes
		}
		if *dataDir != "" {
			cfg.DataDir = *dataDir
		}
		if adminSet {
			cfg.Admin.Address = *admin
		}
		if *level != "" {
			cfg.Log.Level = *level
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	lv := new(slog.LevelVar)
	logger, err := newLogger(cfg.Log, lv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	// Before anything opens: on success this executes the agent again.
	if err := adoptTimerSlack(cfg.TimerSlack, os.Environ(), slack); err != nil {
		logger.Warn("timer slack not set: the agent wakes more often than it needs to", "err", err)
	}
	// Every line the agent logs, its own and its pipelines', has the
	// pipelines' secrets masked (docs/security.md).
	secrets := new(agent.Secrets)
	logger = slog.New(agent.RedactHandler(logger.Handler(), secrets))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan struct{})
	var sigs sync.WaitGroup
	sigs.Go(func() {
		exitOnSecondSignal(ctx, stop, done, func() {
			logger.Error("second signal: exiting without a clean shutdown")
			os.Exit(exitFailure)
		})
	})
	defer func() { close(done); sigs.Wait() }()
	err = runAgent(ctx, runOptions{Config: cfg, ConfigFile: *cfgPath, LoadConfig: load, Logger: logger, Level: lv, Hup: hup, AgentsDir: agentsDir(), Secrets: secrets})
	if err != nil {
		logger.Error("agent failed", "err", err)
		return exitFailure
	}
	return exitOK
}

// exitOnSecondSignal waits for the first SIGINT or SIGTERM (ctx done: a
// clean shutdown begins), then calls exit on a second one: the logs on disk
// are consistent at any moment, so nothing acknowledged is lost by not
// waiting. It returns, its signal handler removed, once done is closed.
func exitOnSecondSignal(ctx context.Context, stop context.CancelFunc, done <-chan struct{}, exit func()) {
	select {
	case <-ctx.Done():
	case <-done:
		return
	}
	// Catch the second signal before letting go of the first handler, so
	// that no signal in between gets the default action.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	stop()
	select {
	case <-again:
		exit()
	case <-done:
	}
}

func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// newLogger returns the agent's logger; lv is set to the configured level
// and may be changed later (a reload of the agent file).
func newLogger(c runner.LogConfig, lv *slog.LevelVar, w io.Writer) (*slog.Logger, error) {
	l, err := c.SlogLevel()
	if err != nil {
		return nil, err
	}
	lv.Set(l)
	opts := &slog.HandlerOptions{Level: lv}
	if journalStream(w) { // under systemd: no timestamp, <N> priorities
		return slog.New(newJournalHandler(w, c.Format == "json", opts)), nil
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// runOptions is what runAgent runs.
type runOptions struct {
	// Config is the agent config, command-line overrides applied.
	Config runner.AgentConfig
	// ConfigFile is the agent file, watched for changes; "" for none.
	ConfigFile string
	// LoadConfig re-reads it with the same overrides.
	LoadConfig func() (runner.AgentConfig, error)
	Logger     *slog.Logger
	// Level is the logger's level, changed by a reload of the agent file.
	Level *slog.LevelVar
	// Hup receives SIGHUP: reload everything.
	Hup <-chan os.Signal
	// Registry builds the components; nil means every one this binary has.
	Registry *runner.Registry
	// Poll rescans the pipelines as a safety net; 0 means every 5 minutes, <0
	// never.
	Poll time.Duration
	// Ready, if set, receives the supervisor once it runs (tests).
	Ready func(*supervisor.Supervisor)
	// AgentsDir is where the admin address is published for status besides
	// the data directory (adminaddr.go); "" for the data directory only.
	AgentsDir string
	// Secrets is the agent's set of secret values, masked in Logger's
	// lines and in the admin API; nil means a new one.
	Secrets *agent.Secrets
}

// pageReleaseInterval is how often at most the agent looks, at a garbage
// collection, whether the executable's pages should be released again after
// the start-up release (rereleasePages: when its resident code grew). In the
// e2e benchmark's Kafka outage, code run only then (retries, the drain) kept
// about 2 MB more of the binary resident; releasing it again bounds that.
const pageReleaseInterval = 30 * time.Second

// startupSettle is how long after READY the start-up pages are released:
// the sources and sinks connect meanwhile (their code would fault back in
// at once). startupReleaseMax is the latest release when READY is late.
const (
	startupSettle     = time.Second
	startupReleaseMax = 10 * time.Second
)

// runAgent locks the data directory, serves the admin API and runs the
// supervisor until ctx is done.
func runAgent(ctx context.Context, o runOptions) error {
	cfg := o.Config
	// Before anything starts: an agent that logs "running" and "stopped"
	// first hides why it could not run.
	if _, err := os.Stat(cfg.PipelinesDir); err != nil {
		return fmt.Errorf("pipelines: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir, o.Logger)
	if err != nil {
		return err
	}
	defer unlock()
	if o.Registry == nil {
		o.Registry = newRegistry()
	}
	if o.Secrets == nil {
		o.Secrets = new(agent.Secrets)
	}
	o.Secrets.Add(agent.SecretValues(&cfg)...) // the admin token
	o.Logger = slog.New(agent.RedactHandler(o.Logger.Handler(), o.Secrets))
	if o.Level == nil {
		o.Level = new(slog.LevelVar)
	}
	switch {
	case o.Poll == 0:
		o.Poll = 5 * time.Minute
	case o.Poll < 0:
		o.Poll = 0
	}
	limit, gcPercent := applyMemorySettings(cfg, os.Getenv)
	procs := applyMaxProcs(cfg, os.Getenv)
	slack, _ := realTimerSlackOS().get()
	o.Logger.Debug("go runtime", "memory_limit", limit, "gc_percent", gcPercent, "max_procs", procs, "timer_slack", slack)
	metrics := runner.NewMetrics()
	// Under systemd: READY=1, RELOADING=1 around a SIGHUP, watchdog pings
	// from the supervisor's loop, STOPPING=1 (systemd_linux.go).
	notify, watchdog := systemdNotifier(o.Logger)
	// READY=1 also says start-up is over: its pages can go (below).
	started := make(chan struct{})
	var startedOnce sync.Once
	sdNotify := notify
	notify = func(state string) {
		if state == "READY=1" {
			startedOnce.Do(func() { close(started) })
		}
		if sdNotify != nil {
			sdNotify(state)
		}
	}
	sup := supervisor.New(supervisor.Deps{
		Config: cfg, LoadConfig: o.LoadConfig, ConfigFile: o.ConfigFile,
		Registry: o.Registry, Metrics: metrics, Logger: o.Logger, Level: o.Level, Poll: o.Poll,
		Notify: notify, Watchdog: watchdog, Secrets: o.Secrets,
	})
	// The fleet's applier finishes a bundle a crash interrupted before the
	// supervisor reads the pipelines.
	fl, ap, err := newFleet(cfg, sup, metrics, o.Logger, o.Secrets)
	if err != nil {
		return err
	}
	hb, err := newHeartbeats(cfg, o.Registry, sup, ap, metrics, o.Logger, o.Secrets)
	if err != nil {
		return err
	}
	stopAdmin, adminAddr, err := startAdmin(cfg.Admin, adminHandler(sup, metrics, o.Logger, fleetStatusFunc(ap, o.Secrets)), o.Logger)
	if err != nil {
		return err
	}
	defer stopAdmin()
	if adminAddr != "" {
		// For pspf-edge status without flags (adminaddr.go).
		unpublish, err := publishAdminAddr(cfg.DataDir, o.AgentsDir, adminAddr)
		if err != nil {
			o.Logger.Warn("status will need --admin", "err", err)
		}
		defer unpublish()
	}
	o.Logger.Info("agent running", "data_dir", cfg.DataDir, "pipelines", cfg.PipelinesDir, "version", version)
	if o.Ready != nil {
		o.Ready(sup)
	}
	// Start-up touches much of the binary once; hand those pages back
	// (pageout_linux.go).
	pageGCs := make(chan struct{}, 1) // collections, for the re-release (memory.go)
	var pages sync.WaitGroup
	defer pages.Wait()
	pagesCtx, stopPages := context.WithCancel(ctx)
	defer stopPages()
	pages.Go(func() {
		// Once the supervisor is ready (every pipeline started), plus a
		// second for the connections to settle; at 10 s at the latest.
		// Released at 10 s, the start-up pages made the agent's RSS 16-19
		// MB for its first ten seconds.
		t := time.NewTimer(startupReleaseMax)
		defer t.Stop()
		select {
		case <-started:
		case <-t.C:
		case <-pagesCtx.Done():
			return
		}
		releaseStartupPages(pagesCtx, startupSettle, 0, o.Logger)
		rereleasePages(pagesCtx, pageReleaseInterval, pageGCs, func() { releaseExecutablePages(o.Logger) }, executableResident)
	})
	// A burst's memory goes back to the system once it is over (memory.go).
	bursts := &burstReleaser{read: heapAllocs, log: o.Logger, free: func() {
		// Two collections: the first moves what the pipelines' buffer
		// pools hold to their victim caches, the second (inside
		// FreeOSMemory, which then releases every free page) frees it.
		runtime.GC()
		debug.FreeOSMemory()
		// The code the burst ran is resident too (pageout_linux.go).
		releaseExecutablePages(o.Logger)
	}}
	gcs := make(chan struct{}, 1)
	notifyGCs(pagesCtx, gcs, pageGCs)
	pages.Go(func() { bursts.run(pagesCtx, burstCheckInterval, gcs) })
	var fleetWG sync.WaitGroup
	fleetCtx, stopFleet := context.WithCancel(ctx)
	fleetWG.Go(func() { runFleet(fleetCtx, fl, hb, o.Logger) })
	err = sup.Run(ctx, o.Hup)
	stopFleet()
	fleetWG.Wait()
	o.Logger.Info("agent stopped")
	return err
}
