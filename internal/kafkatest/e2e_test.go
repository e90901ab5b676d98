// Package kafkatest holds the shell-level Kafka test: the agent binary, the
// kfake-broker command and kcat, as an operator would run them.
package kafkatest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// TestAgentToKafkaWithKcat builds pspf-edge and kfake-broker, runs a
// pipeline of simulated readings into the broker, and counts with kcat -C
// what arrived, by pspf-id header.
func TestAgentToKafkaWithKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat not found (apt-get install kcat): %v", err)
	}
	dir := t.TempDir()
	for _, pkg := range []string{"./cmd/pspf-edge", "./internal/kafkatest/cmd/kfake-broker"} {
		cmd := exec.Command("go", "build", "-o", dir, pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	broker := exec.Command(filepath.Join(dir, "kfake-broker"), "-topics", "e2e:2", "-auto-create=false")
	stdout, _ := broker.StdoutPipe()
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Process.Signal(syscall.SIGTERM); broker.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("broker address: %v", err)
	}
	addr = strings.TrimSpace(addr)

	const total = 2000
	pipes := filepath.Join(dir, "pipelines")
	os.MkdirAll(pipes, 0o755)
	pipeline := `sources:
  - simulate: {sensors: 4, rate: 1000, count: 2000, format: fields, batch: 100}
sinks:
  - kafka: {brokers: [` + addr + `], topic: e2e, compression: zstd}
`
	if err := os.WriteFile(filepath.Join(pipes, "e2e.yaml"), []byte(pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(filepath.Join(dir, "pspf-edge"), "run", "-p", pipes, "-data-dir", filepath.Join(dir, "data"), "-admin", "", "-log-level", "warn")
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() })

	ids := map[string]bool{}
	wait.Until(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, kcat, "-b", addr, "-C", "-t", "e2e", "-e", "-q", "-f", "%h\n").Output()
		cancel()
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, h := range strings.Split(line, ",") {
				if id, ok := strings.CutPrefix(h, "pspf-id="); ok {
					ids[id] = true
				}
			}
		}
		return len(ids) >= total
	})
	if len(ids) != total {
		t.Errorf("kcat counted %d distinct pspf-id, want %d", len(ids), total)
	}
}
