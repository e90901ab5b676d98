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
	reg := agent.NewRegistry()
	reg.Sources["idle"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return idleSource{}, nil })
	reg.Sinks["kafka"] = Factory()
	text := "sources: [{idle: {}}]\nsinks:\n  - kafka: {brokers: [" + os.Getenv("PSPF_BROKER") + "], topic: eos, delivery: exactly_once, linger: 1ms, write_timeout: 5s, request_timeout: 2s}\n    retry: {initial: 10ms, max: 100ms}\n    batch: {max_records: 50}\n    drain: {records_per_second: 3000}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(text), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := agent.NewPipeline(spec, agent.PipelineDeps{Registry: reg, DataDir: os.Getenv("PSPF_DIR"), AgentName: "gw1", OpenLog: agent.OpenDiskLog(logger), Logger: logger})
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
	const total = 3000
	k := testbroker.StartKafka(t, kfake.SeedTopics(3, "eos"))
	dir := t.TempDir()
	fillLog(t, filepath.Join(dir, "log"), total)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^TestEOSChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), childEnv+"=1", "PSPF_BROKER="+k.Addr(), "PSPF_DIR="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for kill := 0; kill < 6; kill++ {
		cmd := start()
		time.Sleep(time.Duration(300+rng.IntN(500)) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
	}
	cmd := start()
	got := consume(t, k.Addr(), total, 30*time.Second, []string{"eos"}, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	cmd.Process.Kill()
	cmd.Wait()
	seen := map[string]int{}
	dups := 0
	for _, r := range got {
		id := header(r, HeaderID)
		if seen[id]++; seen[id] > 1 {
			dups++
		}
	}
	t.Logf("%d records read committed, %d distinct, %d duplicates", len(got), len(seen), dups)
	if len(seen) != total || dups != 0 {
		t.Errorf("got %d distinct and %d duplicates, want %d and 0", len(seen), dups, total)
	}
	// Uncommitted reads show what the kills left behind in aborted
	// transactions: the reason read_committed matters.
	raw := consume(t, k.Addr(), total, 5*time.Second, []string{"eos"})
	t.Logf("read_uncommitted sees %d records", len(raw))
}

// fillLog appends total records to the disk log at dir.
func fillLog(t *testing.T, dir string, total int) {
	t.Helper()
	l, err := agent.OpenDiskLog(slog.New(slog.DiscardHandler))(dir, agent.DefaultBufferConfig())
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
