package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "agent config file (default: built-in defaults)")
	pipes := fs.String("p", "", "pipelines directory, or one pipeline file (default: the agent file's pipelines_dir)")
	dataDir := fs.String("data-dir", "", "data directory (overrides the agent file)")
	admin := fs.String("admin", "-", "admin HTTP address (overrides the agent file; empty disables it)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (overrides the agent file)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge run [-c agent.yaml] [-p pipelines/] [flags]\n\nRuns the agent until SIGINT or SIGTERM; a second signal forces exit.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	cfg, err := agent.LoadAgentConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	if *pipes != "" {
		cfg.PipelinesDir = *pipes
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *admin != "-" {
		cfg.Admin.Address = *admin
	}
	if *level != "" {
		cfg.Log.Level = *level
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second signal after the first forces exit: the logs on disk are
		// consistent at any moment, so nothing acknowledged is lost.
		<-ctx.Done()
		stop()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		<-again
		logger.Error("second signal: exiting without a clean shutdown")
		os.Exit(exitFailure)
	}()
	if err := runAgent(ctx, cfg, logger); err != nil {
		logger.Error("agent failed", "err", err)
		return exitFailure
	}
	return exitOK
}

func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

func newLogger(c agent.LogConfig, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: must be debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// runAgent runs every valid pipeline of the config until ctx is done.
func runAgent(ctx context.Context, cfg agent.AgentConfig, logger *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	reg := newRegistry()
	metrics := agent.NewMetrics()
	specs, errs := loadPipelines(reg, cfg)
	for _, e := range errs {
		logger.Error("pipeline not started: invalid config", "err", e)
	}
	if len(specs) == 0 {
		return fmt.Errorf("no valid pipeline in %s", cfg.PipelinesDir)
	}
	var pipelines []*agent.Pipeline
	for _, spec := range specs {
		p, err := agent.NewPipeline(spec, agent.PipelineDeps{
			Registry:        reg,
			Logger:          logger,
			Metrics:         metrics,
			DataDir:         filepath.Join(cfg.DataDir, "pipelines", spec.Name),
			AgentName:       cfg.Name,
			OpenLog:         agent.OpenDiskLog(logger),
			ShutdownTimeout: cfg.ShutdownTimeout,
			Generation:      1,
		})
		if err != nil {
			logger.Error("pipeline not started", "pipeline", spec.Name, "err", err)
			continue
		}
		pipelines = append(pipelines, p)
	}
	if len(pipelines) == 0 {
		return errors.New("no pipeline could be started")
	}
	stopAdmin, err := startAdmin(cfg.Admin.Address, metrics, logger)
	if err != nil {
		return err
	}
	defer stopAdmin()
	logger.Info("agent running", "pipelines", len(pipelines), "data_dir", cfg.DataDir, "version", version)
	var wg sync.WaitGroup
	errc := make(chan error, len(pipelines))
	for _, p := range pipelines {
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				errc <- fmt.Errorf("pipeline %q: %w", p.Spec().Name, err)
			}
		})
	}
	wg.Wait()
	close(errc)
	var all []error
	for e := range errc {
		all = append(all, e)
	}
	logger.Info("agent stopped")
	return errors.Join(all...)
}

// loadPipelines parses every pipeline file (or the one file) the config names.
func loadPipelines(reg *agent.Registry, cfg agent.AgentConfig) ([]*agent.PipelineSpec, []error) {
	files := []string{cfg.PipelinesDir}
	if st, err := os.Stat(cfg.PipelinesDir); err != nil {
		return nil, []error{fmt.Errorf("pipelines: %w", err)}
	} else if st.IsDir() {
		if files, err = agent.PipelineFiles(cfg.PipelinesDir); err != nil {
			return nil, []error{err}
		}
	}
	var specs []*agent.PipelineSpec
	var errs []error
	for _, f := range files {
		spec, err := reg.LoadPipelineFile(f, cfg.Defaults)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		specs = append(specs, spec)
	}
	return specs, errs
}

// startAdmin serves health and metrics on addr; an empty addr disables it.
func startAdmin(addr string, metrics *agent.Metrics, logger *slog.Logger) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ready\n") })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		metrics.WritePrometheus(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server failed", "err", err)
		}
	}()
	logger.Info("admin listening", "address", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}
