package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
	"github.com/pspf/pspf-edge/sinks/file"
)

// The crash child is this test binary run again with these variables set:
// it runs a real pipeline (mqtt source → disk log → file sink) until killed.
const (
	envChildBroker = "PSPF_MQTT_CRASH_BROKER"
	envChildDir    = "PSPF_MQTT_CRASH_DIR"
)

// crashPipeline is the child's pipeline: QoS 1, a persistent session, the
// log fsynced per batch group, the file sink fsynced before each ack.
const crashPipeline = `
sources:
  - mqtt:
      brokers: [%q]
      client_id: crash-agent
      subscriptions: [{topic: "crash/data/#", qos: 1}]
      max_in_flight: 500
      status: {topic: "crash/status/agent"}
sinks:
  - file:
      path: %q
`

// TestCrashChild is the child process of TestAgentSIGKILLNoLoss; run
// directly, without the variables, it does nothing.
func TestCrashChild(t *testing.T) {
	broker, dir := os.Getenv(envChildBroker), os.Getenv(envChildDir)
	if broker == "" {
		return
	}
	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["file"] = file.Factory()
	text := fmt.Sprintf(crashPipeline, broker, filepath.Join(dir, "out.ndjson"))
	spec, err := reg.ParsePipeline("crash.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Logger: logger, DataDir: filepath.Join(dir, "data"),
		AgentName: "crash", OpenLog: runner.OpenDiskLog(logger), ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// countOutput reads the file sink's NDJSON and counts each sequence number;
// a torn last line (the writer was killed mid-write) is not counted.
func countOutput(t testing.TB, path string, n int) (seen []int, lines int) {
	seen = make([]int, n)
	data, err := os.ReadFile(path)
	if err != nil {
		return seen, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var rec struct {
			Raw string `json:"_raw"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		i, err := strconv.Atoi(rec.Raw)
		if err != nil || i < 0 || i >= n {
			t.Errorf("unexpected record %q", sc.Text())
			continue
		}
		seen[i]++
		lines++
	}
	return seen, lines
}

// TestAgentSIGKILLNoLoss kills the agent with SIGKILL twice while a QoS 1
// stream flows, restarts it each time, and checks that every message the
// broker accepted reaches the file sink: lost = 0, duplicates counted.
func TestAgentSIGKILLNoLoss(t *testing.T) {
	mq := testbroker.Start(t, testbroker.Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), envChildBroker+"="+mq.URL(), envChildDir+"="+dir)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start child: %v", err)
		}
		return cmd
	}
	const n = 6000
	var published atomic.Int64
	pubDone := make(chan struct{})
	pub := publisher(t, mq.URL())
	// Publish only once the agent's session exists: before its first
	// subscription the broker keeps nothing for it.
	online := make(chan struct{}, 1)
	pub.Subscribe("crash/status/agent", 1, func(_ paho.Client, m paho.Message) {
		if string(m.Payload()) == "online" {
			select {
			case online <- struct{}{}:
			default:
			}
		}
	}).Wait()
	child := start()
	select {
	case <-online:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent never announced itself online")
	}
	go func() {
		defer close(pubDone)
		for i := range n {
			publishSure(t, pub, "crash/data/"+strconv.Itoa(i%5), 1, strconv.Itoa(i))
			published.Add(1)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		if !wait.Until(40*time.Second, cond) {
			seen, lines := countOutput(t, out, n)
			t.Fatalf("timed out waiting for %s; %d lines, missing %s", what, lines, missing(seen))
		}
	}
	for k, at := range []int{n / 4, n / 2} {
		waitFor("records in the output", func() bool { _, l := countOutput(t, out, n); return l >= at })
		_ = child.Process.Signal(syscall.SIGKILL)
		_ = child.Wait()
		t.Logf("kill %d: child killed with SIGKILL after %d published", k+1, published.Load())
		child = start()
	}
	<-pubDone
	waitFor("every message in the output", func() bool {
		seen, _ := countOutput(t, out, n)
		for _, c := range seen {
			if c == 0 {
				return false
			}
		}
		return true
	})
	_ = child.Process.Signal(syscall.SIGTERM)
	if err := child.Wait(); err != nil {
		t.Errorf("child after SIGTERM: %v", err)
	}
	seen, lines := countOutput(t, out, n)
	lost := 0
	for _, c := range seen {
		if c == 0 {
			lost++
		}
	}
	t.Logf("SIGKILL x2 during %d QoS 1 messages: lost %d, duplicates %d", n, lost, lines-(n-lost))
	if lost != 0 {
		t.Errorf("got %d lost, want 0", lost)
	}
}

// missing lists the sequence numbers never seen, as ranges.
func missing(seen []int) string {
	var b strings.Builder
	for i := 0; i < len(seen); i++ {
		if seen[i] != 0 {
			continue
		}
		j := i
		for j+1 < len(seen) && seen[j+1] == 0 {
			j++
		}
		fmt.Fprintf(&b, "%d-%d ", i, j)
		i = j
	}
	return b.String()
}
