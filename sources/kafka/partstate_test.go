package kafka

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/operators/window"
	"github.com/pspf/pspf-edge/sinks/file"
	kafkasink "github.com/pspf/pspf-edge/sinks/kafka"
)

// telemetry writes device readings {"dev","ts","v"} keyed by device to a
// topic, device d always to partition d % partitions, with event times
// that move on by step per round for every device: each partition's
// records come in event-time order.
type telemetry struct {
	t          testing.TB
	cl         *kgo.Client
	topic      string
	devices    int
	partitions int
	round      int
	base       time.Time
	step       time.Duration
	// want is every window's expected count and sum, by device and
	// window start (Unix ns).
	want map[winKey]*winAgg
}

type winKey struct {
	dev   string
	start int64
}

type winAgg struct {
	count int
	sum   float64
}

const (
	teleWindow = time.Minute
	teleStep   = 5 * time.Second
)

func newTelemetry(t testing.TB, addrs []string, topic string, devices, partitions int) *telemetry {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.DisableClientMetrics(),
		kgo.RetryTimeout(time.Minute))
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Cleanup(cl.Close)
	return &telemetry{t: t, cl: cl, topic: topic, devices: devices, partitions: partitions,
		base: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), step: teleStep, want: map[winKey]*winAgg{}}
}

// value is device d's reading in round r: distinct per reading, so that a
// lost or doubled one changes the window's sum.
func teleValue(d, r int) float64 { return float64(d*1000+r) + 0.25 }

// produce writes the next n rounds and returns once Kafka has them.
func (p *telemetry) produce(n int) {
	p.t.Helper()
	var recs []*kgo.Record
	for range n {
		ts := p.base.Add(time.Duration(p.round) * p.step)
		for d := range p.devices {
			dev := "d" + strconv.Itoa(d)
			v := teleValue(d, p.round)
			recs = append(recs, &kgo.Record{Key: []byte(dev), Partition: int32(d % p.partitions),
				Value: fmt.Appendf(nil, `{"dev":%q,"ts":%d,"v":%v}`, dev, ts.UnixMilli(), v)})
			k := winKey{dev, ts.Truncate(teleWindow).UnixNano()}
			if p.want[k] == nil {
				p.want[k] = &winAgg{}
			}
			p.want[k].count++
			p.want[k].sum += v
		}
		p.round++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		p.t.Fatalf("produce: %v", err)
	}
}

// closed returns the windows of the rounds so far that every
// partition's watermark has passed.
func (p *telemetry) closed() map[winKey]*winAgg {
	last := p.base.Add(time.Duration(p.round-1) * p.step)
	out := map[winKey]*winAgg{}
	for k, v := range p.want {
		if time.Unix(0, k.start).Add(2 * teleWindow).Before(last) {
			out[k] = v
		}
	}
	return out
}

// close writes one reading per device an hour after the last round, so
// that every partition's watermark passes every window of the rounds:
// they are all emitted. It returns the windows expected.
func (p *telemetry) close() map[winKey]*winAgg {
	p.t.Helper()
	want := map[winKey]*winAgg{}
	for k, v := range p.want {
		want[k] = &winAgg{v.count, v.sum}
	}
	p.step, p.round = time.Hour, p.round*int(teleStep)/int(time.Hour)+2
	p.produce(1)
	return want
}

// windowPipe runs a pipeline called name (the same on every agent: the
// window outputs' IDs hold it) with a Kafka source, a JSON decoder, a
// one-minute window per device and a recording sink, in dir.
func windowPipe(t testing.TB, name, source, state, dir string, logger *slog.Logger) *pipe {
	t.Helper()
	return windowPipeTo(t, name, source, "record: {}", state, dir, logger)
}

// windowPipeTo is windowPipe with the sink entry sinkYAML (record: the
// recording sink; kafka: the Kafka sink).
func windowPipeTo(t testing.TB, name, source, sinkYAML, state, dir string, logger *slog.Logger) *pipe {
	t.Helper()
	sink := &agenttest.RecordingSink{}
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["window"] = window.Factory()
	reg.Sinks["record"] = agent.Typed[agent.Sink]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Sink, error) { return sink, nil })
	reg.Sinks["kafka"] = kafkasink.Factory()
	text := "sources:\n  - kafka: " + source + "\noperators:\n" +
		"  - decode: {format: json, time_field: ts, time_format: unix_ms}\n" +
		"  - window: {size: 1m, aggregates: [{fn: count}, {fn: sum, field: v}]}\n" +
		"sinks:\n  - " + sinkYAML + "\n" + state
	if !strings.Contains(state, "checkpoint:") {
		text += "checkpoint: {interval: 100ms}\n"
	}
	spec, err := reg.ParsePipeline(name+".yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: dir, AgentName: "gw-" + name,
		OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &pipe{p: p, m: m, sink: sink, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// windows is what the sinks received: every window output by ID, with
// the values of its first copy, and the conflicts (an ID seen with other
// values) and duplicates.
type windows struct {
	got       map[string]winOut
	conflicts []string
	dups      int
}

type winOut struct {
	key   winKey
	count int
	sum   float64
}

func collectWindows(t testing.TB, sinks ...*agenttest.RecordingSink) *windows {
	t.Helper()
	var recs [][]agent.Record
	for _, s := range sinks {
		recs = append(recs, s.Records())
	}
	return windowsOf(t, recs...)
}

// windowsOf collects the window outputs of lists of records.
func windowsOf(t testing.TB, lists ...[]agent.Record) *windows {
	t.Helper()
	w := &windows{got: map[string]winOut{}}
	for _, list := range lists {
		for _, r := range list {
			c, sum, start := r.Field("count"), r.Field("v_sum"), r.Field("window_start")
			if c == nil || sum == nil || start == nil {
				t.Fatalf("window output %s lacks its fields: %+v", r.ID, r.Fields)
			}
			ts, err := time.Parse(time.RFC3339Nano, start.Str)
			if err != nil {
				t.Fatalf("window output %s: window_start %q: %v", r.ID, start.Str, err)
			}
			n, _ := c.AsFloat()
			v, _ := sum.AsFloat()
			o := winOut{winKey{r.Key, ts.UnixNano()}, int(n), v}
			if prev, ok := w.got[r.ID]; ok {
				w.dups++
				if prev != o {
					w.conflicts = append(w.conflicts, fmt.Sprintf("%s: %+v and %+v", r.ID, prev, o))
				}
				continue
			}
			w.got[r.ID] = o
		}
	}
	return w
}

// compare returns the windows expected and missing, or with other values,
// and the outputs no window of the input explains.
func (w *windows) compare(want map[winKey]*winAgg) (missing, wrong, extra []string) {
	seen := map[winKey]bool{}
	for id, o := range w.got {
		e, ok := want[o.key]
		switch {
		case !ok:
			extra = append(extra, id)
			continue
		case o.count != e.count || math.Abs(o.sum-e.sum) > 1e-6:
			wrong = append(wrong, fmt.Sprintf("%s: count %d sum %v, want %d and %v", id, o.count, o.sum, e.count, e.sum))
		}
		seen[o.key] = true
	}
	for k := range want {
		if !seen[k] {
			missing = append(missing, fmt.Sprintf("%s@%s", k.dev, time.Unix(0, k.start).UTC().Format(time.TimeOnly)))
		}
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	return missing, wrong, extra
}

// complete reports whether every window of want was received.
func (w *windows) complete(want map[winKey]*winAgg) bool {
	missing, _, _ := w.compare(want)
	return len(missing) == 0
}

// TestPartitionStateRebalance runs the window pipeline on agent a while
// agent b joins the group and later leaves, with the records streaming:
// partitions move from a to b and back, with open windows. Every window of
// the input is emitted with the count and sum of exactly its readings
// (lost 0, no reading counted twice), and an ID never comes with two
// different values. With the local store (bbolt) b rebuilds the
// partitions it takes from their first record; with the kafka store it
// restores them from the changelog; a, when they come back, restores its
// checkpoint of them (and, with kafka, the changelog's tail b appended).
func TestPartitionStateRebalance(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"bbolt", "kafka"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			testPartitionStateRebalance(t, store)
		})
	}
}

func testPartitionStateRebalance(t *testing.T, store string) {
	const devices, partitions, rounds = 24, 6, 120
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele"))
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	src := sourceYAML(k.Addrs(), "tele", ", group: rollup, static_membership: false, session_timeout: 6s, heartbeat_interval: 200ms")
	state := "state: {store: " + store + "}\n"
	if store == "kafka" {
		state = "state: {store: kafka, changelog: rollup-state}\n"
	}
	logsA, logsB := &agenttest.LogBuffer{}, &agenttest.LogBuffer{}
	a := windowPipe(t, "rollup", src, state, t.TempDir(), logsA.Logger(slog.LevelInfo))
	prod.produce(rounds / 3)
	agenttest.Eventually(t, 30*time.Second, "a to emit windows", func() bool { return len(a.sink.Records()) > 0 }, logsA)
	b := windowPipe(t, "rollup", src, state, t.TempDir(), logsB.Logger(slog.LevelInfo))
	agenttest.Eventually(t, 30*time.Second, "b to read records", func() bool {
		prod.produce(1)
		return b.metric(`pspf_kafka_source_records_total{pipeline="rollup",component="kafka"}`) > 0
	}, logsB)
	// Both members show in status what they own: every partition once,
	// in the same generation.
	agenttest.Eventually(t, 30*time.Second, "the partitions shared, in status", func() bool {
		sa, sb := a.p.Status().Partitions, b.p.Status().Partitions
		if sa == nil || sb == nil || sa.Group != "rollup" || sa.Generation < 1 || sa.Generation != sb.Generation ||
			len(sa.Owned) == 0 || len(sb.Owned) == 0 {
			return false
		}
		seen := map[int32]int{}
		for _, o := range append(sa.Owned, sb.Owned...) {
			seen[o.Partition]++
		}
		for p := range int32(partitions) {
			if seen[p] != 1 {
				return false
			}
		}
		return true
	}, logsA)
	for range 10 {
		prod.produce(rounds / 30)
	}
	b.stop(t)
	prod.produce(rounds - prod.round)
	want := prod.close()
	agenttest.Eventually(t, 60*time.Second, "every window in a sink", func() bool { return collectWindows(t, a.sink, b.sink).complete(want) }, logsA)
	agenttest.Eventually(t, 30*time.Second, "a's status: every partition, lag 0, each checkpointed", func() bool {
		if a.metric(`pspf_state_partitions{pipeline="rollup"}`) != partitions {
			return false
		}
		st := a.p.Status().Partitions
		if st == nil || len(st.Owned) != partitions || st.Lag != 0 {
			return false
		}
		for _, o := range st.Owned {
			if o.Checkpointed < 0 {
				return false
			}
		}
		return true
	}, logsA)
	a.stop(t)
	w := collectWindows(t, a.sink, b.sink)
	missing, wrong, extra := w.compare(want)
	t.Logf("%d windows expected; a emitted %d, b %d; duplicates %d (same ID and values)", len(want), len(a.sink.Records()), len(b.sink.Records()), w.dups)
	if len(missing) > 0 || len(wrong) > 0 || len(extra) > 0 || len(w.conflicts) > 0 {
		t.Errorf("missing %d %v\nwrong %d %v\nextra %d %v\nconflicts %v", len(missing), missing[:min(5, len(missing))],
			len(wrong), wrong[:min(5, len(wrong))], len(extra), extra[:min(5, len(extra))], w.conflicts)
	}
	if got := a.metric(`pspf_state_partitions{pipeline="rollup"}`); got != 0 {
		t.Errorf("a: pspf_state_partitions %v after it stopped, want 0 (its partitions let go)", got)
	}
	if got := a.metric(`pspf_kafka_source_rebalances_total{pipeline="rollup",component="kafka",event="revoked"}`); got < 1 {
		t.Errorf("a: got %v revokes, want at least 1 (b joined)\n%s", got, logsA)
	}
	if lines := logsA.Lines("partitions revoked: state checkpointed and let go"); len(lines) == 0 {
		t.Errorf("a: no revoke checkpointed its partitions' state\n%s", logsA)
	}
	if store == "kafka" {
		if got := b.metric(`pspf_state_changelog_records_total{pipeline="rollup",op="restored"}`); got <= 0 {
			t.Errorf("b restored %v changelog records, want the keys of the partitions it took\n%s", got, logsB)
		}
	}
}

// TestChangelogRestore runs the window pipeline with `state: {store:
// kafka}` three times on one data directory: stopped after a first part
// of the stream; started again (its state.db is the cache: it reads none
// of the changelog, which holds nothing it does not have); stopped, its
// state.db deleted and started again (it restores every partition from
// the changelog and resumes at the positions there, without going back
// to the partitions' first records). Every window comes once with exactly
// its readings, whichever run emitted it.
func TestChangelogRestore(t *testing.T) {
	t.Parallel()
	const devices, partitions = 12, 4
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele"))
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	src := sourceYAML(k.Addrs(), "tele", ", group: rollup, static_membership: false, session_timeout: 6s, heartbeat_interval: 200ms")
	state := "state: {store: kafka, changelog: rollup-state}\n"
	dir := t.TempDir()
	var sinks []*agenttest.RecordingSink
	run := func(rounds int, logs *agenttest.LogBuffer) *pipe {
		p := windowPipe(t, "rollup", src, state, dir, logs.Logger(slog.LevelInfo))
		sinks = append(sinks, p.sink)
		prod.produce(rounds)
		closed := prod.closed()
		agenttest.Eventually(t, 30*time.Second, "the windows closed so far", func() bool {
			w := collectWindows(t, sinks...)
			return w.complete(closed)
		}, logs)
		return p
	}
	logs1, logs2, logs3 := &agenttest.LogBuffer{}, &agenttest.LogBuffer{}, &agenttest.LogBuffer{}
	p1 := run(40, logs1)
	p1.stop(t)
	appended := p1.metric(`pspf_state_changelog_records_total{pipeline="rollup",op="appended"}`)
	if appended <= 0 {
		t.Fatalf("run 1 appended %v records to the changelog, want some\n%s", appended, logs1)
	}

	p2 := run(40, logs2)
	p2.stop(t)
	if got := p2.metric(`pspf_state_changelog_records_total{pipeline="rollup",op="restored"}`); got != 0 {
		t.Errorf("run 2 (same state.db) restored %v changelog records, want 0: the cache has them all\n%s", got, logs2)
	}

	if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	p3 := run(40, logs3)
	want := prod.close()
	agenttest.Eventually(t, 60*time.Second, "every window in a sink", func() bool { return collectWindows(t, sinks...).complete(want) }, logs3)
	p3.stop(t)
	restored := p3.metric(`pspf_state_changelog_records_total{pipeline="rollup",op="restored"}`)
	if restored <= 0 {
		t.Errorf("run 3 (state.db deleted) restored %v changelog records, want the partitions' keys\n%s", restored, logs3)
	}
	for _, line := range logs3.Lines("partitions assigned: state restored") {
		if strings.Contains(line, "=-1") {
			t.Errorf("run 3 rebuilt a partition from its first record instead of restoring it: %s", line)
		}
	}
	w := collectWindows(t, sinks...)
	missing, wrong, extra := w.compare(want)
	t.Logf("%d windows; appended %v changelog records in run 1; run 3 restored %v; duplicates %d", len(want), appended, restored, w.dups)
	if len(missing) > 0 || len(wrong) > 0 || len(extra) > 0 || len(w.conflicts) > 0 {
		t.Errorf("missing %d %v\nwrong %d %v\nextra %d %v\nconflicts %v", len(missing), missing[:min(5, len(missing))],
			len(wrong), wrong[:min(5, len(wrong))], len(extra), extra[:min(5, len(extra))], w.conflicts)
	}
}

// killedGroup is the group of the window agents of the tests that kill
// some (a process killed does not leave the group: the others get its
// partitions once its session timed out) on a cluster that allows the
// short session: shortSessions.
const killedGroup = ", group: rollup, static_membership: false, session_timeout: 3s, heartbeat_interval: 200ms, rebalance_timeout: 10s"

// shortSessions lets a cluster take sessions shorter than Kafka's
// group.min.session.timeout.ms (6s, kfake's too).
func shortSessions() kfake.Opt { return kfake.GroupMinSessionTimeout(time.Second) }

// The window child is this test binary run again with these variables
// set: it runs the window pipeline with the kafka store, its outputs to a
// file sink, until killed.
const (
	envWinBrokers = "PSPF_KAFKA_WINDOW_BROKERS"
	envWinDir     = "PSPF_KAFKA_WINDOW_DIR"
	// With these, the outputs go to the Kafka topic rollup-out with this
	// delivery, and the agent has this name (transactional ids are per
	// agent); the checkpoint interval may be set too.
	envWinDelivery = "PSPF_KAFKA_WINDOW_DELIVERY"
	envWinName     = "PSPF_KAFKA_WINDOW_NAME"
	envWinInterval = "PSPF_KAFKA_WINDOW_INTERVAL"
	envWinLevel    = "PSPF_KAFKA_WINDOW_LOG_LEVEL" // slog level of the child; WARN unless set
)

// TestWindowChild is the child process of TestChangelogRestoreAfterKill;
// run directly, without the variables, it does nothing.
func TestWindowChild(t *testing.T) {
	brokers, dir := os.Getenv(envWinBrokers), os.Getenv(envWinDir)
	if brokers == "" {
		return
	}
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["window"] = window.Factory()
	reg.Sinks["file"] = file.Factory()
	reg.Sinks["kafka"] = kafkasink.Factory()
	sink := "file: {path: " + strconv.Quote(filepath.Join(dir, "out.ndjson")) + "}"
	if d := os.Getenv(envWinDelivery); d != "" {
		// TestExactlyOnceGroup: the outputs go to Kafka.
		sink = "name: out\n    kafka: {brokers: [" + brokers + "], topic: rollup-out, delivery: " + d + ", linger: 1ms}"
	}
	name := os.Getenv(envWinName)
	if name == "" {
		name = "child"
	}
	text := "sources:\n  - kafka: " + sourceYAML(strings.Split(brokers, ","), "tele", killedGroup) +
		"\noperators:\n  - decode: {format: json, time_field: ts, time_format: unix_ms}\n" +
		"  - window: {size: 1m, aggregates: [{fn: count}, {fn: sum, field: v}]}\n" +
		"sinks:\n  - " + sink + "\n" +
		"checkpoint: {interval: " + cmp.Or(os.Getenv(envWinInterval), "100ms") + "}\nstate: {store: kafka, changelog: rollup-state}\n"
	spec, err := reg.ParsePipeline("rollup.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	level := slog.LevelWarn
	if v := os.Getenv(envWinLevel); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			t.Fatalf("%s: %v", envWinLevel, err)
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Logger: logger, DataDir: filepath.Join(dir, "data"),
		AgentName: name, OpenLog: runner.OpenDiskLog(logger), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// fileWindows reads the window outputs a file sink wrote; a torn last
// line (the writer was killed) is not counted.
func fileWindows(t testing.TB, path string) []agent.Record {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []agent.Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if r, ok := windowJSON(sc.Bytes()); ok {
			out = append(out, r)
		}
	}
	return out
}

// windowJSON decodes a window output as the file and Kafka sinks write it
// (JSON); ok is false for anything else.
func windowJSON(b []byte) (agent.Record, bool) {
	var rec struct {
		ID    string  `json:"_id"`
		Key   string  `json:"_key"`
		Count float64 `json:"count"`
		Sum   float64 `json:"v_sum"`
		Start string  `json:"window_start"`
	}
	if json.Unmarshal(b, &rec) != nil || rec.ID == "" {
		return agent.Record{}, false
	}
	return agent.Record{ID: rec.ID, Key: rec.Key, Fields: []agent.Field{
		agent.Float("count", rec.Count), agent.Float("v_sum", rec.Sum), agent.String("window_start", rec.Start)}}, true
}

// TestChangelogRestoreAfterKill runs the window pipeline with the kafka
// store in a child process, kills it with SIGKILL mid-stream, and has
// another agent (another data directory: no cache) take its partitions
// over once the group lets them go: it restores them from the changelog
// and resumes at the positions there. Every window of the input comes with
// exactly its readings (from the killed agent's file or the other agent),
// and an ID never with two different values.
func TestChangelogRestoreAfterKill(t *testing.T) {
	t.Parallel()
	const devices, partitions = 12, 4
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele"), shortSessions())
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWindowChild$", "-test.v")
	cmd.Env = append(os.Environ(), envWinBrokers+"="+strings.Join(k.Addrs(), ","), envWinDir+"="+dir)
	var stderr agenttest.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	out := filepath.Join(dir, "out.ndjson")
	prod.produce(30)
	closed := prod.closed()
	agenttest.Eventually(t, 60*time.Second, "the child to emit the windows closed so far", func() bool {
		return windowsOf(t, fileWindows(t, out)).complete(closed)
	}, &stderr)
	// A checkpoint with state has reached the changelog of every
	// partition: more than the one record of a checkpoint before any
	// reading was taken in (its position -1). On a loaded machine the
	// windows above can be out before such a checkpoint is.
	agenttest.Eventually(t, 60*time.Second, "a checkpoint with state in every changelog partition", func() bool {
		ends := endOffsets(t, k.Addrs(), "rollup-state", partitions)
		for p := range int32(partitions) {
			if ends[p] < 2 {
				return false
			}
		}
		return true
	}, &stderr)
	prod.produce(7) // mid-window: open windows with readings taken in
	// The kill comes at a random moment of taking them in: before, during
	// or after a checkpoint.
	<-time.After(time.Duration(rand.IntN(500)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	logs := &agenttest.LogBuffer{}
	b := windowPipe(t, "rollup", sourceYAML(k.Addrs(), "tele", killedGroup),
		"state: {store: kafka, changelog: rollup-state}\n", t.TempDir(), logs.Logger(slog.LevelInfo))
	prod.produce(30)
	want := prod.close()
	agenttest.Eventually(t, 60*time.Second, "every window in a sink", func() bool {
		return windowsOf(t, fileWindows(t, out), b.sink.Records()).complete(want)
	}, logs)
	b.stop(t)
	restored := b.metric(`pspf_state_changelog_records_total{pipeline="rollup",op="restored"}`)
	if restored <= 0 {
		t.Errorf("the other agent restored %v changelog records, want the partitions' keys\n%s", restored, logs)
	}
	for _, line := range logs.Lines("partitions assigned: state restored") {
		if strings.Contains(line, "=-1") {
			t.Errorf("a partition was rebuilt from its first record instead of restored: %s", line)
		}
	}
	w := windowsOf(t, fileWindows(t, out), b.sink.Records())
	missing, wrong, extra := w.compare(want)
	t.Logf("%d windows; the killed agent wrote %d, the other %d; restored %v changelog records; duplicates %d",
		len(want), len(fileWindows(t, out)), len(b.sink.Records()), restored, w.dups)
	if len(missing) > 0 || len(wrong) > 0 || len(extra) > 0 || len(w.conflicts) > 0 {
		t.Errorf("missing %d %v\nwrong %d %v\nextra %d %v\nconflicts %v", len(missing), missing[:min(5, len(missing))],
			len(wrong), wrong[:min(5, len(wrong))], len(extra), extra[:min(5, len(extra))], w.conflicts)
	}
}

// child is a window agent in a process of its own (TestWindowChild).
type child struct {
	t      testing.TB
	dir    string
	cmd    *exec.Cmd
	stderr *agenttest.LogBuffer
}

func startChild(t testing.TB, addrs []string, dir string, env ...string) *child {
	t.Helper()
	c := &child{t: t, dir: dir, stderr: &agenttest.LogBuffer{}}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestWindowChild$", "-test.v")
	c.cmd.Env = append(os.Environ(), envWinBrokers+"="+strings.Join(addrs, ","), envWinDir+"="+dir)
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stderr = c.stderr
	c.cmd.Stdout = c.stderr // a child that fails says why on stdout
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.signal(syscall.SIGKILL) })
	return c
}

// signal sends sig and waits for the process to end (SIGTERM: a clean
// stop, the group is left and the state checkpointed).
func (c *child) signal(sig syscall.Signal) {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(sig)
	c.cmd.Wait()
	c.cmd = nil
}

// outputs returns what the child's file sink holds.
func (c *child) outputs() []agent.Record {
	return fileWindows(c.t, filepath.Join(c.dir, "out.ndjson"))
}

// TestGroupOfAgents is the scenario: three agents (processes) in
// one group over a 12-partition topic, the kafka store, telemetry
// streaming; one agent killed with SIGKILL mid-stream and started again
// on its data directory, a fourth joining, one leaving; under 5 seeds,
// which pick the agents, the moments and the readings' values. The set
// of window outputs (by ID, with values) is exactly the input's windows,
// as the single deterministic runner computes them: none missing, none
// with other values, no ID with two values.
func TestGroupOfAgents(t *testing.T) {
	t.Parallel()
	for seed := range uint64(5) {
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			t.Parallel()
			testGroupOfAgents(t, seed)
		})
	}
}

func testGroupOfAgents(t *testing.T, seed uint64) {
	const devices, partitions = 36, 12
	rng := rand.New(rand.NewPCG(seed*0x9e3779b97f4a7c15+1, seed^0x5851f42d4c957f2d))
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele"), shortSessions())
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	prod.base = prod.base.Add(time.Duration(rng.IntN(60)) * time.Second)
	var all []*child
	start := func() *child {
		c := startChild(t, k.Addrs(), t.TempDir())
		all = append(all, c)
		return c
	}
	restart := func(c *child) *child {
		n := startChild(t, k.Addrs(), c.dir)
		all = append(all, n)
		return n
	}
	union := func() *windows {
		var lists [][]agent.Record
		seen := map[string]bool{}
		for _, c := range all {
			if seen[c.dir] {
				continue // a restarted agent appends to the same file
			}
			seen[c.dir] = true
			lists = append(lists, c.outputs())
		}
		return windowsOf(t, lists...)
	}
	caughtUp := func(what string) {
		closed := prod.closed()
		agenttest.Eventually(t, 90*time.Second, what, func() bool { return union().complete(closed) }, all[0].stderr)
	}
	pause := func() { <-time.After(time.Duration(rng.IntN(400)) * time.Millisecond) }
	agents := []*child{start(), start(), start()}
	prod.produce(30)
	caughtUp("the windows closed so far, three agents")
	prod.produce(6 + rng.IntN(6))
	pause()
	victim := rng.IntN(len(agents))
	agents[victim].signal(syscall.SIGKILL)
	prod.produce(20)
	agents[victim] = restart(agents[victim])
	caughtUp("the windows closed so far, after the kill")
	prod.produce(6 + rng.IntN(6))
	agents = append(agents, start())
	pause()
	prod.produce(20)
	leaver := rng.IntN(len(agents))
	agents[leaver].signal(syscall.SIGTERM)
	prod.produce(20)
	want := prod.close()
	agenttest.Eventually(t, 120*time.Second, "every window in a sink", func() bool { return union().complete(want) }, all[0].stderr)
	for _, c := range agents {
		c.signal(syscall.SIGTERM)
	}
	w := union()
	missing, wrong, extra := w.compare(want)
	t.Logf("seed %d: %d windows; killed agent %d, agent %d left; duplicates %d (same ID and values)", seed, len(want), victim, leaver, w.dups)
	if len(missing) > 0 || len(wrong) > 0 || len(extra) > 0 || len(w.conflicts) > 0 {
		t.Errorf("missing %d %v\nwrong %d %v\nextra %d %v\nconflicts %v", len(missing), missing[:min(5, len(missing))],
			len(wrong), wrong[:min(5, len(wrong))], len(extra), extra[:min(5, len(extra))], w.conflicts)
	}
}

// TestChangelogFirstStart starts the window pipeline with `state: {store:
// kafka}` on a cluster without its changelog topic: the first assignment
// creates the topic and restores (nothing) from it at once, without a
// failed restore, a rejoin or a warning, and the windows come.
func TestChangelogFirstStart(t *testing.T) {
	const devices, partitions = 8, 4
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele"))
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	logs := &agenttest.LogBuffer{}
	p := windowPipe(t, "rollup", sourceYAML(k.Addrs(), "tele", ", group: rollup"), "state: {store: kafka, changelog: rollup-state}\n",
		t.TempDir(), logs.Logger(slog.LevelInfo))
	prod.produce(40)
	closed := prod.closed()
	agenttest.Eventually(t, 60*time.Second, "the windows closed so far", func() bool { return collectWindows(t, p.sink).complete(closed) }, logs)
	p.stop(t)
	if n := len(logs.Lines("kafka changelog topic created")); n != 1 {
		t.Errorf("got %d 'kafka changelog topic created' lines, want 1\n%s", n, logs)
	}
	if w := logs.Lines("level=WARN"); len(w) > 0 {
		t.Errorf("got warnings on a first start:\n%s", strings.Join(w, "\n"))
	}
	if got := p.metric(`pspf_kafka_source_rebalances_total{pipeline="rollup",component="kafka",event="lost"}`); got > 0 {
		t.Errorf("got %v partitions lost, want none", got)
	}
}
