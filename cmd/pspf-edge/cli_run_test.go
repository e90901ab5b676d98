package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/agenttest"
)

// TestRunHelpShowsNoSentinel: run --help shows the flags as a user types
// them; no internal value such as default "-".
func TestRunHelpShowsNoSentinel(t *testing.T) {
	code, out, errb := run(t, "run", "--help")
	if code != exitOK || strings.Contains(out+errb, `default "-"`) || !strings.Contains(errb, "-admin string") {
		t.Errorf("got exit %d:\n%s%s\nwant 0, the -admin flag and no default \"-\"", code, out, errb)
	}
}

// TestRunWithoutPipelinesDir: the missing directory is the first thing and
// the only error the agent logs; it never says it runs.
func TestRunWithoutPipelinesDir(t *testing.T) {
	bin := buildBinary(t, t.TempDir(), "amd64", "")
	dir := t.TempDir()
	cmd := exec.Command(bin, "run", "-p", filepath.Join(dir, "missing"), "--data-dir", filepath.Join(dir, "data"), "--admin", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("got %v, want exit %d:\n%s", err, exitFailure, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if !strings.Contains(lines[0], "pipelines: stat "+filepath.Join(dir, "missing")) || strings.Contains(string(out), "agent running") || strings.Contains(string(out), "agent stopped") {
		t.Errorf("got:\n%s\nwant the missing pipelines directory first, and no agent running/stopped", out)
	}
}

// TestStatusFindsAgentWithoutFlags starts the agent as `make run` does, on
// --admin 127.0.0.1:0, and runs status without flags, then with -c only;
// --admin "" still disables the API.
func TestStatusFindsAgentWithoutFlags(t *testing.T) {
	bin := buildBinary(t, t.TempDir(), "amd64", "")
	runtimeDir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir) // the agent's and status's
	data := filepath.Join(t.TempDir(), "data")
	demo, _ := filepath.Abs("../../pipelines/demo.yaml")
	cmd := exec.Command(bin, "run", "-p", demo, "--data-dir", data, "--admin", "127.0.0.1:0", "--log-level", "warn")
	cmd.Dir = t.TempDir()
	var logs agenttest.LogBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	published := filepath.Join(runtimeDir, "pspf-edge", strconv.Itoa(cmd.Process.Pid)+".json")
	agenttest.Eventually(t, 30*time.Second, "the admin address published", func() bool {
		_, err1 := os.Stat(filepath.Join(data, adminAddrFile))
		_, err2 := os.Stat(published)
		return err1 == nil && err2 == nil
	}, &logs)
	// Until the demo runs, status shows it as not started (exit 1): wait
	// for readiness.
	addr, err := os.ReadFile(filepath.Join(data, adminAddrFile))
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 30*time.Second, "the agent's readiness", func() bool {
		resp, err := http.Get("http://" + strings.TrimSpace(string(addr)) + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, &logs)

	// The agent executed itself again for its timer slack: the process
	// started (its id published) has it on every thread, the runtime's
	// monitor thread included.
	slacks, err := threadTimerSlacks(cmd.Process.Pid)
	if err != nil || len(slacks) < 2 {
		t.Errorf("threads' timer slack: got %v, %v; want at least two threads", slacks, err)
	}
	for tid, d := range slacks {
		if d != time.Millisecond {
			t.Errorf("thread %d has timer slack %v, want the default 1ms (all: %v)", tid, d, slacks)
		}
	}
	if strings.Contains(logs.String(), "timer slack") {
		t.Errorf("got a timer slack line:\n%s", logs.String())
	}

	code, out, errb := run(t, "status")
	if code != exitOK || !strings.Contains(out, "demo") {
		t.Errorf("status: got exit %d:\n%s%s\nwant 0 and the demo pipeline", code, out, errb)
	}
	agentFile := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(agentFile, []byte("data_dir: "+data+"\nadmin: {address: \"127.0.0.1:0\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errb = run(t, "status", "-c", agentFile, "--json")
	var resp struct {
		Pipelines []struct {
			Name           string `json:"name"`
			BacklogRecords *int64 `json:"backlog_records"`
		} `json:"pipelines"`
	}
	if err := json.Unmarshal([]byte(out), &resp); code != exitOK || err != nil || len(resp.Pipelines) != 1 || resp.Pipelines[0].Name != "demo" || resp.Pipelines[0].BacklogRecords == nil {
		t.Errorf("status -c: got exit %d, %v:\n%s%s\nwant 0 and the demo with backlog_records", code, err, out, errb)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("agent exit: %v\n%s", err, logs.String())
	}
	stopped = true
	for _, p := range []string{filepath.Join(data, adminAddrFile), published} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s: still there after the agent stopped", p)
		}
	}
	// Nothing answers now: status says so, exit 3.
	if code, _, errb := run(t, "status", "-c", agentFile, "--timeout", "2s"); code != exitFailure || !strings.Contains(errb, "is the agent running?") {
		t.Errorf("status with no agent: got exit %d, %q; want %d, is the agent running?", code, errb, exitFailure)
	}
}
