package kafka

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/sinks/file"
)

// The crash child is this test binary run again with these variables set:
// it runs a real pipeline (kafka source → decode → disk log → file sink)
// until killed.
const (
	envChildBrokers = "PSPF_KAFKA_CRASH_BROKERS"
	envChildTopic   = "PSPF_KAFKA_CRASH_TOPIC"
	envChildDir     = "PSPF_KAFKA_CRASH_DIR"
)

// crashPipeline is the child's pipeline: the source commits every 20ms,
// the log is fsynced per group commit, the file sink before each ack. The
// slow operator holds each batch 30ms before the log: a kill then often
// falls between a batch's read and its append, the window in which a
// source that committed what it read (not what is durable) loses records.
const crashPipeline = `
sources:
  - kafka:
      brokers: [%s]
      topics: [%s]
      group: %s
      commit_interval: 20ms
      fetch_max_wait: 100ms
      max_retry_backoff: 500ms
      batch_size: 100
operators:
  - decode: {format: json}
  - slow: {}
sinks:
  - file:
      path: %q
`

// TestCrashChild is the child process of TestAgentSIGKILLNoLoss; run
// directly, without the variables, it does nothing.
func TestCrashChild(t *testing.T) {
	brokers, topic, dir := os.Getenv(envChildBrokers), os.Getenv(envChildTopic), os.Getenv(envChildDir)
	if brokers == "" {
		return
	}
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["slow"] = agent.Typed[agent.Operator]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Operator, error) {
		return agenttest.OperatorFunc(func(ctx context.Context, _ *agent.Batch) error {
			agent.Sleep(ctx, 30*time.Millisecond)
			return nil
		}), nil
	})
	reg.Sinks["file"] = file.Factory()
	text := fmt.Sprintf(crashPipeline, brokers, topic, topic, filepath.Join(dir, "out.ndjson"))
	spec, err := reg.ParsePipeline("crash.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	level := slog.LevelError
	if os.Getenv("PSPF_KAFKA_CRASH_DEBUG") != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Logger: logger, DataDir: filepath.Join(dir, "data"),
		AgentName: "crash", OpenLog: runner.OpenDiskLog(logger), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// countOutput reads the file sink's NDJSON and counts each payload's i,
// and the distinct record IDs; a torn last line (the writer was killed
// mid-write) is not counted. A record read again from Kafka after a crash
// is a new record in the log, with an ID of its own; one the file sink
// writes again (its cursor was behind the file) has the same ID.
func countOutput(t testing.TB, path string, n int) (seen []int, lines, ids int) {
	seen = make([]int, n)
	data, err := os.ReadFile(path)
	if err != nil {
		return seen, 0, 0
	}
	distinct := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var rec struct {
			ID        string `json:"_id"`
			I         *int   `json:"i"`
			Partition *int   `json:"kafka.partition"`
			Trace     string `json:"kafka.header.trace"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.I == nil {
			continue
		}
		if *rec.I < 0 || *rec.I >= n || rec.Partition == nil || rec.Trace != fmt.Sprintf("t%d", *rec.I) {
			t.Errorf("unexpected record %q", sc.Text())
			continue
		}
		seen[*rec.I]++
		lines++
		distinct[rec.ID] = true
	}
	return seen, lines, len(distinct)
}

// TestAgentSIGKILLNoLoss kills the agent (a child process) with SIGKILL at
// random moments while a stream flows from a 3-broker cluster, and
// restarts it each time, for 10 seeds: every record Kafka acknowledged to
// the producer reaches the file sink (lost = 0, counted by payload);
// duplicates (records read again from the last committed offset) are
// counted and reported.
func TestAgentSIGKILLNoLoss(t *testing.T) {
	t.Parallel()
	const seeds, n = 10, 2000
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(6, topicsFor(seeds)...))
	brokers := strings.Join(k.Addrs(), ", ")
	totalDups, totalRead, totalKills := 0, 0, 0
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		topic := fmt.Sprintf("crash-%d", seed)
		dir := t.TempDir()
		out := filepath.Join(dir, "out.ndjson")
		start := func() *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v=false")
			cmd.Env = append(os.Environ(), envChildBrokers+"="+brokers, envChildTopic+"="+topic, envChildDir+"="+dir)
			cmd.Stderr = os.Stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatalf("start child: %v", err)
			}
			return cmd
		}
		prod := newProducer(t, k.Addrs(), topic, 64)
		streamed := make(chan struct{})
		go func() {
			defer close(streamed)
			prod.stream(n, 20, 2*time.Millisecond, nil)
		}()
		child := start()
		kills := 1 + rng.IntN(3)
		for range kills {
			time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
			_ = child.Process.Signal(syscall.SIGKILL)
			_ = child.Wait()
			child = start()
		}
		<-streamed
		deadline := time.Now().Add(60 * time.Second)
		for {
			seen, _, _ := countOutput(t, out, n)
			if missingOf(seen) == "" {
				break
			}
			if time.Now().After(deadline) {
				_ = child.Process.Signal(syscall.SIGKILL)
				_ = child.Wait()
				t.Fatalf("seed %d: timed out; missing %s", seed, missingOf(seen))
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = child.Process.Signal(syscall.SIGTERM)
		if err := child.Wait(); err != nil {
			t.Errorf("seed %d: child after SIGTERM: %v", seed, err)
		}
		seen, lines, ids := countOutput(t, out, n)
		lost := 0
		for _, c := range seen {
			if c == 0 {
				lost++
			}
		}
		dups := lines - (n - lost)
		totalDups += dups
		totalRead += ids - (n - lost)
		totalKills += kills
		t.Logf("seed %d: %d SIGKILLs during %d records: lost %d, duplicates %d (%d read again from Kafka, %d written again by the sink)",
			seed, kills, n, lost, dups, ids-(n-lost), lines-ids)
		if lost != 0 {
			t.Errorf("seed %d: got %d lost, want 0", seed, lost)
		}
	}
	t.Logf("%d seeds, %d SIGKILLs, %d records each: lost 0, duplicates %d in all, %d of them read again from Kafka", seeds, totalKills, n, totalDups, totalRead)
}

func topicsFor(seeds int) []string {
	out := make([]string, seeds)
	for i := range out {
		out[i] = fmt.Sprintf("crash-%d", i)
	}
	return out
}

// missingOf lists the payloads never seen, as ranges; "" when none is.
func missingOf(seen []int) string {
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
