package kafka

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// idleSource never emits: the child process only forwards a log that the
// parent filled before.
type idleSource struct{}

func (idleSource) Connect(context.Context) error { return nil }
func (idleSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	<-ctx.Done()
	return nil, nil, ctx.Err()
}
func (idleSource) Close(context.Context) error { return nil }

const childEnv = "PSPF_KAFKA_EOS_CHILD"

// TestEOSChild is the child process of TestExactlyOnceSIGKILL: it forwards
// the pipeline log in $PSPF_DIR to the broker $PSPF_BROKER until killed.
func TestEOSChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		return // only meaningful as the child of TestExactlyOnceSIGKILL
	}
	reg := runner.NewRegistry()
	reg.Sources["idle"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return idleSource{}, nil })
	reg.Sinks["kafka"] = Factory()
	text := "sources: [{idle: {}}]\nsinks:\n  - kafka: {brokers: [" + os.Getenv("PSPF_BROKER") + "], topic: " + os.Getenv("PSPF_TOPIC") + ", delivery: " + os.Getenv("PSPF_DELIVERY") + ", linger: 1ms, write_timeout: 5s, request_timeout: 2s}\n    retry: {initial: 10ms, max: 100ms}\n    batch: {max_records: 50}\n    drain: {records_per_second: 3000}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: os.Getenv("PSPF_DIR"), AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	p.Run(context.Background()) // until SIGKILL
}

// TestExactlyOnceSIGKILL fills a pipeline log, then runs a child process
// that forwards it with delivery: exactly_once and SIGKILLs it at random
// moments, several times, before letting one finish. A read_committed
// consumer must see every record exactly once.
func TestExactlyOnceSIGKILL(t *testing.T) {
	lost, dups := crashRun(t, "exactly_once", 6, 7)
	if lost != 0 || dups != 0 {
		t.Errorf("got %d lost and %d duplicates, want 0 and 0", lost, dups)
	}
}

// TestAtLeastOnceSIGKILL does the same with the default delivery over 10
// seeds of kill moments: nothing may be lost; duplicates are reported.
func TestAtLeastOnceSIGKILL(t *testing.T) {
	lost, dups := crashRun(t, "at_least_once", 10, 3)
	if lost != 0 {
		t.Errorf("got %d lost, want 0", lost)
	}
	t.Logf("at_least_once: %d duplicates after 10 SIGKILLs (same pspf-id, for consumers to drop)", dups)
}

func crashRun(t *testing.T, delivery string, kills int, seed uint64) (lost, dups int) {
	const total = 3000
	k := testbroker.StartKafka(t, kfake.SeedTopics(3, delivery))
	dir := t.TempDir()
	fillLog(t, filepath.Join(dir, "log"), total)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^TestEOSChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), childEnv+"=1", "PSPF_BROKER="+k.Addr(), "PSPF_DIR="+dir, "PSPF_TOPIC="+delivery, "PSPF_DELIVERY="+delivery)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	rng := rand.New(rand.NewPCG(seed, 11))
	for range kills {
		cmd := start()
		// The kill moment, random: the fault this test injects, not a wait.
		time.Sleep(time.Duration(300+rng.IntN(1000)) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
	}
	cmd := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.ConsumeTopics(delivery), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	n := 0
	deadline := time.Now().Add(40 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			n++
			id := header(r, HeaderID)
			if seen[id]++; seen[id] > 1 {
				dups++
			}
		})
		cancel()
	}
	t.Logf("%s: %d records read committed, %d distinct, %d duplicates", delivery, n, len(seen), dups)
	return total - len(seen), dups
}

// fillLog appends total records to the disk log at dir.
func fillLog(t *testing.T, dir string, total int) {
	t.Helper()
	l, err := runner.OpenDiskLog(slog.New(slog.DiscardHandler))(dir, runner.DefaultBufferConfig())
	if err != nil {
		t.Fatal(err)
	}
	var payloads [][]byte
	for i := range total {
		r := agent.Record{Key: "k" + strconv.Itoa(i%5), Fields: []agent.Field{agent.Int("i", int64(i))}}
		b, _ := r.MarshalMsg(nil)
		payloads = append(payloads, b)
	}
	last, err := l.Append(context.Background(), payloads)
	if err == nil {
		err = l.Sync(context.Background(), last)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
