package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// bufferRedrive sends a pipeline's dead letters through one of its sinks.
// It runs on a stopped agent's data directory, under the directory's lock:
// the dead-letter log and the sink's destination are then its alone, and a
// running agent cannot append to the log, move its cursors or fence the
// sink's producer meanwhile.
func bufferRedrive(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buffer redrive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { bufferUsage(stderr) }
	cfgPath := fs.String("c", "", "agent config file, for data_dir, pipelines_dir and the agent's name")
	dataDir := fs.String("data-dir", "", "data directory (overrides the agent file)")
	pipeDir := fs.String("p", "", "pipelines directory (overrides the agent file)")
	sinkName := fs.String("sink", "", "the sink of the pipeline to send the dead letters through")
	all := fs.Bool("all", false, "send every dead letter, not only those the sink refused")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long (the next run goes on from where this one stopped); 0: no limit")
	every := fs.Duration("progress", 2*time.Second, "how often to print progress to stderr; 0: never")
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 || *sinkName == "" {
		fmt.Fprintln(stderr, "buffer redrive: needs a pipeline name and --sink SINK")
		bufferUsage(stderr)
		return exitUsage
	}
	name := fs.Arg(0)
	cfg, code := loadForPipeline("buffer redrive", name, *cfgPath, *dataDir, *pipeDir, stderr)
	if code != exitOK {
		return code
	}
	reg := newRegistry()
	spec, err := loadPipeline(reg, cfg, name)
	if err != nil {
		fmt.Fprintf(stderr, "buffer redrive: %v\n", err)
		return exitProblem
	}
	var sc *runner.ComponentSpec
	var names []string
	for i := range spec.Sinks {
		names = append(names, spec.Sinks[i].Name)
		if spec.Sinks[i].Name == *sinkName {
			sc = &spec.Sinks[i]
		}
	}
	if sc == nil {
		fmt.Fprintf(stderr, "buffer redrive: pipeline %q has no sink %q (its sinks: %s)\n", name, *sinkName, strings.Join(names, ", "))
		return exitProblem
	}
	pdir := filepath.Join(cfg.DataDir, "pipelines", name)
	deadDir := filepath.Join(pdir, "dead")
	if st, err := os.Stat(deadDir); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "buffer redrive: pipeline %q has no dead letters (no %s)\n", name, deadDir)
		return exitProblem
	}
	secrets := new(agent.Secrets)
	secrets.Add(spec.Secrets()...)
	logger := slog.New(agent.RedactHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), secrets))
	unlock, err := lockDataDir(cfg.DataDir, logger)
	if err != nil {
		fmt.Fprintf(stderr, "buffer redrive: refused while an agent runs (stop it first): %v\n", err)
		return exitProblem
	}
	defer unlock()

	dead, err := runner.OpenDiskLog(logger)(deadDir, runner.DeadLetterBufferConfig())
	if err != nil {
		fmt.Fprintf(stderr, "buffer redrive: open dead letters: %v\n", err)
		return exitFailure
	}
	defer dead.Close()
	env := agent.Env{
		Pipeline:  name,
		Component: sc.Name,
		Logger:    logger.With("pipeline", name, "component", sc.Name),
		Metrics:   runner.NewMetrics(),
		DataDir:   filepath.Join(pdir, "components", sc.Name),
		AgentName: cfg.Name,
		Now:       time.Now,
		Secrets:   secrets,
		Unreachable: func(err error) {
			logger.Warn("redrive: destination not answering; still trying", "err", err)
		},
	}
	// A Kafka sink's exactly_once transactions commit the pipeline log's
	// cursor, which dead letters are not part of: they go out with the
	// idempotent producer instead, visible to read_committed consumers too.
	conf, changed := atLeastOnce(sc.Config)
	if changed {
		fmt.Fprintf(stderr, "buffer redrive: %s uses exactly_once; dead letters are sent at-least-once (same pspf-id on a resend)\n", sc.Name)
	}
	sink, err := reg.Sinks[sc.Type].New(conf, env)
	if err != nil {
		fmt.Fprintf(stderr, "buffer redrive: %s: %v\n", sc.Place, secrets.Redact(err))
		return exitProblem
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	var last time.Time
	progress := func(p runner.RedriveProgress) {
		if *every <= 0 || time.Since(last) < *every {
			return
		}
		last = time.Now()
		fmt.Fprintf(stderr, "redrive: %s\n", progressLine(p))
	}
	pr, err := runner.Redrive(ctx, dead, sink, runner.RedriveOptions{
		Pipeline: name, Sink: sc.Name, All: *all,
		Retry: sc.Sink.Retry, Batch: sc.Sink.Batch,
		Progress: progress, Logger: logger, Secrets: secrets,
	})
	err = secrets.Redact(err)
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f, ok := sink.(agent.Flusher); ok && err == nil {
		if ferr := f.Flush(cctx); ferr != nil {
			err = secrets.Redact(fmt.Errorf("flush: %w", ferr))
		}
	}
	sink.Close(cctx)
	cursor := runner.RedriveCursor(sc.Name, *all)
	if err != nil {
		fmt.Fprintf(stderr, "buffer redrive: %v\n", err)
		fmt.Fprintf(stdout, "%s; stopped: run it again to go on (cursor %s)\n", progressLine(pr), cursor)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s (cursor %s)\n", progressLine(pr), cursor)
	if pr.Refused > 0 {
		return exitProblem
	}
	return exitOK
}

func progressLine(p runner.RedriveProgress) string {
	pct := 100.0
	if p.Total > 0 {
		pct = float64(p.Seen) / float64(p.Total) * 100
	}
	s := fmt.Sprintf("%d of %d dead letters looked at (%.0f%%): %d sent, %d refused by other components (skipped), %d refused again (kept)",
		p.Seen, p.Total, pct, p.Sent, p.Skipped, p.Refused)
	if p.Undecodable > 0 {
		s += fmt.Sprintf(", %d undecodable (left)", p.Undecodable)
	}
	return s
}

// loadPipeline parses the pipeline file called name in the agent's
// pipelines directory.
func loadPipeline(reg *runner.Registry, cfg runner.AgentConfig, name string) (*runner.PipelineSpec, error) {
	files, err := runner.PipelineFiles(cfg.PipelinesDir)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if runner.PipelineName(f) == name {
			return reg.LoadPipelineFile(f, cfg.Defaults)
		}
	}
	return nil, fmt.Errorf("no pipeline file %s.yaml in %s", name, cfg.PipelinesDir)
}
