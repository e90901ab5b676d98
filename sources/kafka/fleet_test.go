package kafka

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/operators/window"
	sink "github.com/pspf/pspf-edge/sinks/kafka"
)

// TestFleetRollupExample runs pipelines/fleet-rollup.yaml as it is (its
// brokers pointed at a 3-broker kfake cluster) on two agents in its
// group, with its Kafka sink and its changelog, over the input of its
// `pspf-edge test` case (produced keyed by device) and one reading per
// device an hour later that closes every window. The rollups read back
// from fleet-rollup-1m (read_committed, de-duplicated by pspf-id) are
// exactly the case's expected output: the same IDs and values as the
// deterministic single runner's.
func TestFleetRollupExample(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile("../../pipelines/fleet-rollup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(6, "fleet-telemetry"), kfake.SeedTopics(3, "fleet-rollup-1m"))
	brokers := `["kafka-1.example.net:9092", "kafka-2.example.net:9092", "kafka-3.example.net:9092"]`
	if !bytes.Contains(text, []byte(brokers)) {
		t.Fatalf("the example's brokers are not %s any more: update the test", brokers)
	}
	addrs, _ := json.Marshal(k.Addrs())
	text = bytes.ReplaceAll(text, []byte(brokers), addrs)
	// Shorter timings than production's, for the test's sake only.
	text = bytes.Replace(text, []byte("      group: fleet-rollup "),
		[]byte("      session_timeout: 6s\n      heartbeat_interval: 200ms\n      fetch_max_wait: 100ms\n      unreachable_after: 1s\n      group: fleet-rollup "), 1)
	text = bytes.Replace(text, []byte("checkpoint: {interval: 5s}"), []byte("checkpoint: {interval: 100ms}"), 1)
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["window"] = window.Factory()
	reg.Sinks["kafka"] = sink.Factory()
	spec, err := reg.ParsePipeline("fleet-rollup.yaml", text, runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	start := func(agentName string, logs *agenttest.LogBuffer) *pipe {
		m := runner.NewMetrics()
		p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: t.TempDir(), AgentName: agentName,
			OpenLog: runner.OpenDiskLog(logs.Logger(slog.LevelInfo)), Logger: logs.Logger(slog.LevelInfo), ShutdownTimeout: 30 * time.Second})
		if err != nil {
			t.Fatalf("new pipeline: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &pipe{p: p, m: m, cancel: cancel, done: make(chan error, 1)}
		go func() { r.done <- p.Run(ctx) }()
		t.Cleanup(func() { r.stop(t) })
		return r
	}
	logsA, logsB := &agenttest.LogBuffer{}, &agenttest.LogBuffer{}
	a, b := start("cloud-1", logsA), start("cloud-2", logsB)
	agenttest.Eventually(t, 30*time.Second, "both agents to own partitions", func() bool {
		sa, sb := a.p.Status().Partitions, b.p.Status().Partitions
		return sa != nil && sb != nil && len(sa.Owned) > 0 && len(sb.Owned) > 0 && len(sa.Owned)+len(sb.Owned) == 6
	}, logsA)

	prod, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...), kgo.DefaultProduceTopic("fleet-telemetry"), kgo.DisableClientMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	input, err := os.ReadFile("../../pipelines/tests/fleet-rollup/input.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	last := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(input))
	for sc.Scan() {
		var r struct {
			Device string `json:"device"`
			TS     int64  `json:"ts"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Key: []byte(r.Device), Value: bytes.Clone(sc.Bytes())})
		last[r.Device] = max(last[r.Device], r.TS)
	}
	for dev, ts := range last {
		recs = append(recs, &kgo.Record{Key: []byte(dev), Value: []byte(`{"device":"` + dev + `","ts":` + strconv.FormatInt(ts+3600000, 10) + `,"temp":0}`)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	want := map[string]map[string]any{}
	exp, err := os.ReadFile("../../pipelines/tests/fleet-rollup/expected.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(exp)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		want[m["_id"].(string)] = m
	}
	got := map[string]map[string]any{}
	reader, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...), kgo.ConsumeTopics("fleet-rollup-1m"), kgo.DisableClientMetrics(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	agenttest.Eventually(t, 60*time.Second, "every rollup in fleet-rollup-1m", func() bool {
		pctx, pcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer pcancel()
		reader.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			var m map[string]any
			if json.Unmarshal(r.Value, &m) != nil {
				return
			}
			for _, h := range r.Headers {
				if h.Key == sink.HeaderID {
					m["_id"] = string(h.Value)
				}
			}
			if id, ok := m["_id"].(string); ok {
				got[id] = m
			}
		})
		return len(got) >= len(want)
	}, logsA)
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Errorf("rollup %s missing", id)
			continue
		}
		for _, f := range []string{"temp_mean", "temp_min", "temp_max", "count", "window_start"} {
			if g[f] != w[f] {
				t.Errorf("rollup %s: %s %v, want %v", id, f, g[f], w[f])
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d rollups, want %d", len(got), len(want))
	}
}
