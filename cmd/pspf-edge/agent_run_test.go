package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// downSink fails every write, as a sink whose destination is down does.
type downSink struct{}

func (downSink) Connect(context.Context) error { return nil }
func (downSink) Close(context.Context) error   { return nil }
func (downSink) Write(context.Context, []agent.Record) error {
	return errors.New("down sink: destination down")
}

// agentRun is runAgent on temporary directories, as `pspf-edge run` runs
// it: the data directory locked, the admin API, systemd. The supervisor's
// own behaviour is tested in agent/supervisor; these tests are of what
// cmd/pspf-edge puts around it.
type agentRun struct {
	t       *testing.T
	dir     string // pipelines
	data    string
	cfgFile string // the agent file, "" for none
	sup     *supervisor.Supervisor
	hup     chan os.Signal
	logs    *agenttest.LogBuffer
	cancel  context.CancelFunc
	done    chan error
}

// startAgent runs the agent on the pipeline files (name to content), with
// the binary's components and the sink "down", and the admin API on admin
// ("" disables it); it returns once every pipeline runs. A stop drains for
// a second at most.
func startAgent(t *testing.T, files map[string]string, admin string) *agentRun {
	t.Helper()
	return startAgentFile(t, files, admin, "")
}

// startAgentFile is startAgent with an agent file of content agentFile
// ("" for none), watched and reloaded like the one of `run -c`; the
// directories, the admin address and the timeouts of startAgent override
// it.
func startAgentFile(t *testing.T, files map[string]string, admin, agentFile string) *agentRun {
	t.Helper()
	root := t.TempDir()
	a := &agentRun{t: t, dir: filepath.Join(root, "pipelines"), data: filepath.Join(root, "data"), hup: make(chan os.Signal, 1),
		logs: &agenttest.LogBuffer{}, done: make(chan error, 1)}
	if err := os.Mkdir(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		writeFile(t, filepath.Join(a.dir, name), body)
	}
	reg := newRegistry()
	type cfg struct{}
	reg.Sinks["down"] = agent.Typed[agent.Sink]("a sink whose destination is down", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Sink, error) {
		return downSink{}, nil
	})
	cfgFile := ""
	if agentFile != "" {
		cfgFile = filepath.Join(root, "agent.yaml")
		writeFile(t, cfgFile, agentFile)
	}
	a.cfgFile = cfgFile
	load := func() (runner.AgentConfig, error) {
		c, err := runner.LoadAgentConfig(cfgFile)
		c.DataDir, c.PipelinesDir, c.Admin.Address, c.ReloadDebounce = a.data, a.dir, admin, 50*time.Millisecond
		c.ShutdownTimeout = time.Second // the sink "down" never drains
		return c, err
	}
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	lv := new(slog.LevelVar)
	logger, err := newLogger(c.Log, lv, a.logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	ready := make(chan *supervisor.Supervisor, 1)
	go func() {
		a.done <- runAgent(ctx, runOptions{Config: c, ConfigFile: cfgFile, LoadConfig: load, Logger: logger, Level: lv, Hup: a.hup, Registry: reg, Poll: -1,
			Ready: func(s *supervisor.Supervisor) { ready <- s }})
	}()
	select {
	case a.sup = <-ready:
	case err := <-a.done:
		t.Fatalf("agent ended at start: %v\n%s", err, a.logs.String())
	}
	a.waitFor("every pipeline to run", func() bool { ok, _ := a.sup.Ready(); return ok })
	return a
}

// stop stops the agent (draining) and returns runAgent's error.
func (a *agentRun) stop() error {
	a.cancel()
	select {
	case err := <-a.done:
		return err
	case <-time.After(30 * time.Second):
		a.t.Fatalf("agent did not stop within 30s\n%s", a.logs.String())
		return nil
	}
}

// view returns the named pipeline's view.
func (a *agentRun) view(name string) supervisor.PipelineView {
	for _, v := range a.sup.Views() {
		if v.Name == name {
			return v
		}
	}
	return supervisor.PipelineView{Name: name}
}

func (a *agentRun) waitFor(what string, ok func() bool) {
	a.t.Helper()
	agenttest.Eventually(a.t, 10*time.Second, what, ok, a.logs)
}

// writeFile writes body to path or fails the test.
func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
