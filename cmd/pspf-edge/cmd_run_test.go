package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/wait"
)

// goroutines returns the stacks of every goroutine but os/signal's own
// loop, which the first signal.Notify starts for the life of the process.
func goroutines() []string {
	buf := make([]byte, 1<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if !strings.Contains(g, "os/signal.loop") {
			out = append(out, g)
		}
	}
	return out
}

// `pspf-edge run` stopped by SIGTERM returns with every goroutine it
// started ended, the one that watches for a second signal included.
func TestRunEndsEveryGoroutineOnSignal(t *testing.T) {
	dir := t.TempDir()
	pipes := filepath.Join(dir, "pipelines")
	if err := os.Mkdir(pipes, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(pipes, "p.yaml"), "sources:\n  - simulate: {format: fields, rate: 50}\nsinks:\n  - file: {path: "+filepath.Join(dir, "out.ndjson")+"}\n")
	base := len(goroutines())
	var stdout, stderr agenttest.LogBuffer
	code := make(chan int, 1)
	go func() {
		code <- runCommand([]string{"-p", pipes, "--data-dir", filepath.Join(dir, "data"), "--admin", ""}, &stdout, &stderr, noExecTimerSlack(t))
	}()
	agenttest.Eventually(t, 10*time.Second, "the agent's start", func() bool { return strings.Contains(stderr.String(), "supervisor watching") }, &stderr)
	// The execution for the timer slack failed (noExecTimerSlack): one WARN
	// says so, and the agent runs on.
	if n := strings.Count(stderr.String(), "timer slack not set"); n != 1 {
		t.Errorf("got %d timer slack WARNs, want 1:\n%s", n, stderr.String())
	}
	// The agent's handler is in place (it logged after installing it): the
	// signal stops it instead of the test binary.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != exitOK {
			t.Fatalf("got exit %d, want 0:\n%s", c, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return after SIGTERM:\n%s", stderr.String())
	}
	var gs []string
	left := ""
	ended := wait.Until(5*time.Second, func() bool {
		gs, left = goroutines(), ""
		for _, g := range gs {
			// A goroutine runCommand (cmdRun's body) started, or one of
			// its own frames (the test's goroutine mentions neither).
			if strings.Contains(g, "pspf-edge.runCommand") || strings.Contains(g, "pspf-edge.cmdRun") || strings.Contains(g, "pspf-edge.exitOnSecondSignal") {
				left = g
			}
		}
		return left == "" && len(gs) <= base
	})
	if !ended {
		t.Fatalf("after run returned: %d goroutines (%d before); one of run's:\n%s\nall:\n%s", len(gs), base, left, strings.Join(gs, "\n\n"))
	}
}
