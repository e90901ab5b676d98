package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// consumeAll reads topic from the start until want records arrived or the
// deadline passed, then a little longer for duplicates.
func consumeAll(t *testing.T, addr, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	cancel()
	return out
}

// readings counts the records of got by payload (sensor and seq of the
// simulated reading) and by pspf-id, and returns the distinct readings and
// the duplicates of either.
func readings(t *testing.T, got []*kgo.Record) (distinct, dups int) {
	t.Helper()
	byPayload := map[string]int{}
	byID := map[string]int{}
	for _, r := range got {
		var v struct {
			Sensor string `json:"sensor"`
			Seq    int64  `json:"seq"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Sensor == "" {
			t.Fatalf("value %s: %v", r.Value, err)
		}
		byPayload[v.Sensor+"/"+itoa(v.Seq)]++
		for _, h := range r.Headers {
			if h.Key == "pspf-id" {
				byID[string(h.Value)]++
			}
		}
	}
	for _, n := range byPayload {
		dups += n - 1
	}
	if len(byID) != len(byPayload) {
		t.Errorf("got %d distinct pspf-ids for %d distinct readings, want one each", len(byID), len(byPayload))
	}
	return len(byPayload), dups
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestBufferRedrive produces dead letters through two Kafka sinks whose
// topics do not exist (missing_topic: dead_letter), then, with the agent
// stopped, sends them back with `buffer redrive` once the topics exist:
// every reading arrives once (by payload), with the ID it had; a second
// run sends nothing; dead letters refused again stay in the dead-letter log
// and go through once the destination takes them; and the command refuses
// to run while an agent holds the data directory.
func TestBufferRedrive(t *testing.T) {
	const n = 1000
	k := testbroker.StartKafka(t, kfake.SeedTopics(1, "other"))
	root := t.TempDir()
	data, pipes := filepath.Join(root, "data"), filepath.Join(root, "pipelines")
	os.MkdirAll(pipes, 0o750)
	file := "sources:\n  - simulate: {sensors: 4, rate: 1000, count: " + itoa(n) + ", format: fields, seed: 1}\n" +
		"sinks:\n" +
		"  - kafka: {brokers: [" + k.Addr() + "], topic: up, missing_topic: dead_letter}\n    name: uplink\n    batch: {max_records: 1000}\n" +
		"  - kafka: {brokers: [" + k.Addr() + "], topic: aud, missing_topic: dead_letter}\n    name: audit\n    batch: {max_records: 1000}\n" +
		"  - kafka: {brokers: [" + k.Addr() + "], topic: txn, missing_topic: dead_letter, delivery: exactly_once}\n    name: eos\n    batch: {max_records: 1000}\n"
	writeFile(t, filepath.Join(pipes, "p.yaml"), file)
	reg := newRegistry()
	spec, err := reg.LoadPipelineFile(filepath.Join(pipes, "p.yaml"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	logger := slog.New(slog.DiscardHandler)
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: filepath.Join(data, "pipelines", "p"), AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("%d dead letters in %s", p.Status().DeadLetters, time.Since(start).Round(time.Millisecond))
	if d := p.Status().DeadLetters; d != 3*n {
		t.Fatalf("got %d dead letters, want %d (every sink refused every reading)", d, 3*n)
	}

	redrive := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		start := time.Now()
		code := cmdBuffer(append([]string{"redrive", "p", "--data-dir", data, "-p", pipes, "--progress", "1ns", "--timeout", "1m"}, args...), &out, &errOut)
		if code != exitOK {
			t.Logf("stderr: %s", errOut.String())
		}
		t.Logf("redrive %v: exit %d in %s: %s", args, code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out.String()))
		return code, out.String(), errOut.String()
	}
	// An agent on the data directory: refused.
	unlock, err := lockDataDir(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := redrive("--sink", "uplink"); code != exitProblem || !strings.Contains(errOut, "refused while an agent runs") {
		t.Errorf("under a running agent: exit %d, %q; want %d and a refusal", code, errOut, exitProblem)
	}
	unlock()
	if code, _, errOut := redrive("--sink", "nosuch"); code != exitProblem || !strings.Contains(errOut, `has no sink "nosuch" (its sinks: uplink, audit, eos)`) {
		t.Errorf("unknown sink: exit %d, %q", code, errOut)
	}

	if err := k.Cluster().CreateTopic("up", 2, nil); err != nil {
		t.Fatal(err)
	}
	// Kafka away: the run gives up at its timeout, having sent nothing
	// and moved no cursor.
	k.Stop()
	code, out, errOut := redrive("--sink", "uplink", "--timeout", "2s")
	if code != exitFailure || !strings.Contains(out, "0 sent") || !strings.Contains(out, "run it again") {
		t.Errorf("redrive uplink, Kafka away: exit %d\nstdout: %s\nstderr: %s\nwant %d, nothing sent", code, out, errOut, exitFailure)
	}
	k.Start()
	code, out, errOut = redrive("--sink", "uplink")
	if code != exitOK || !strings.Contains(out, itoa(n)+" sent") || !strings.Contains(out, itoa(2*n)+" refused by other components") {
		t.Fatalf("redrive uplink: exit %d\nstdout: %s\nstderr: %s\nwant 0, %d sent, %d skipped", code, out, errOut, n, n)
	}
	if !strings.Contains(errOut, "redrive: ") || !strings.Contains(errOut, "dead letters looked at") {
		t.Errorf("redrive uplink: no progress on stderr: %q", errOut)
	}
	got := consumeAll(t, k.Addr(), "up", n)
	if distinct, dups := readings(t, got); distinct != n || dups != 0 {
		t.Errorf("topic up: got %d distinct readings, %d duplicates; want %d, 0", distinct, dups, n)
	}
	for _, r := range got {
		for _, h := range r.Headers {
			if h.Key == "pspf-id" && !strings.HasPrefix(string(h.Value), "p:") {
				t.Fatalf("got pspf-id %q, want the ID the record had (p:<seq>)", h.Value)
			}
		}
	}

	// Idempotent: a second run finds nothing left for uplink.
	if code, out, _ := redrive("--sink", "uplink"); code != exitOK || !strings.Contains(out, "0 of 0 dead letters looked at") {
		t.Errorf("second redrive uplink: exit %d, %q; want 0 and nothing looked at", code, out)
	}
	if got := consumeAll(t, k.Addr(), "up", n); len(got) != n {
		t.Errorf("topic up after the second run: got %d records, want %d", len(got), n)
	}

	// The audit topic is still missing: refused again, kept.
	code, out, errOut = redrive("--sink", "audit")
	if code != exitProblem || !strings.Contains(out, "0 sent") || !strings.Contains(out, itoa(n)+" refused again") {
		t.Fatalf("redrive audit, topic missing: exit %d\nstdout: %s\nstderr: %s\nwant 1, %d refused again", code, out, errOut, n)
	}
	if err := k.Cluster().CreateTopic("aud", 1, nil); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = redrive("--sink", "audit")
	if code != exitOK || !strings.Contains(out, itoa(n)+" sent") {
		t.Fatalf("redrive audit: exit %d\nstdout: %s\nstderr: %s\nwant 0, %d sent", code, out, errOut, n)
	}
	if distinct, dups := readings(t, consumeAll(t, k.Addr(), "aud", n)); distinct != n || dups != 0 {
		t.Errorf("topic aud: got %d distinct readings, %d duplicates; want %d, 0", distinct, dups, n)
	}
	if code, out, _ := redrive("--sink", "audit"); code != exitOK || !strings.Contains(out, " 0 sent") {
		t.Errorf("second redrive audit: exit %d, %q; want 0 and nothing sent", code, out)
	}

	// An exactly_once sink's transactions commit the pipeline log's
	// cursor: its dead letters go out at-least-once instead.
	if err := k.Cluster().CreateTopic("txn", 1, nil); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = redrive("--sink", "eos")
	if code != exitOK || !strings.Contains(out, itoa(n)+" sent") || !strings.Contains(errOut, "sent at-least-once") {
		t.Fatalf("redrive eos: exit %d\nstdout: %s\nstderr: %s\nwant 0, %d sent at-least-once", code, out, errOut, n)
	}
	if distinct, dups := readings(t, consumeAll(t, k.Addr(), "txn", n)); distinct != n || dups != 0 {
		t.Errorf("topic txn: got %d distinct readings, %d duplicates; want %d, 0", distinct, dups, n)
	}
}
