package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
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
	sink := &agenttest.RecordingSink{}
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["window"] = window.Factory()
	reg.Sinks["record"] = agent.Typed[agent.Sink]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Sink, error) { return sink, nil })
	text := "sources:\n  - kafka: " + source + "\noperators:\n" +
		"  - decode: {format: json, time_field: ts, time_format: unix_ms}\n" +
		"  - window: {size: 1m, aggregates: [{fn: count}, {fn: sum, field: v}]}\n" +
		"sinks:\n  - record: {}\ncheckpoint: {interval: 100ms}\n" + state
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
	w := &windows{got: map[string]winOut{}}
	for _, s := range sinks {
		for _, r := range s.Records() {
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
// different values. The state is local (bbolt): b rebuilds the partitions
// it takes from their first record, and a, when they come back, restores
// its checkpoint of them from revoke time and resumes after it.
func TestPartitionStateRebalance(t *testing.T) {
	const devices, partitions, rounds = 24, 6, 120
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele"))
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	src := sourceYAML(k.Addrs(), "tele", ", group: rollup, static_membership: false, session_timeout: 6s, heartbeat_interval: 200ms")
	logsA, logsB := &logBuf{}, &logBuf{}
	a := windowPipe(t, "rollup", src, "", t.TempDir(), logsA.logger())
	prod.produce(rounds / 3)
	agenttest.Eventually(t, 30*time.Second, "a to emit windows", func() bool { return len(a.sink.Records()) > 0 }, logsA)
	b := windowPipe(t, "rollup", src, "", t.TempDir(), logsB.logger())
	agenttest.Eventually(t, 30*time.Second, "b to read records", func() bool {
		prod.produce(1)
		return b.metric(`pspf_kafka_source_records_total{pipeline="rollup",component="kafka"}`) > 0
	}, logsB)
	for range 10 {
		prod.produce(rounds / 30)
	}
	b.stop(t)
	prod.produce(rounds - prod.round)
	want := prod.close()
	agenttest.Eventually(t, 60*time.Second, "every window in a sink", func() bool { return collectWindows(t, a.sink, b.sink).complete(want) }, logsA)
	a.stop(t)
	w := collectWindows(t, a.sink, b.sink)
	missing, wrong, extra := w.compare(want)
	t.Logf("%d windows expected; a emitted %d, b %d; duplicates %d (same ID and values)", len(want), len(a.sink.Records()), len(b.sink.Records()), w.dups)
	if len(missing) > 0 || len(wrong) > 0 || len(extra) > 0 || len(w.conflicts) > 0 {
		t.Errorf("missing %d %v\nwrong %d %v\nextra %d %v\nconflicts %v", len(missing), missing[:min(5, len(missing))],
			len(wrong), wrong[:min(5, len(wrong))], len(extra), extra[:min(5, len(extra))], w.conflicts)
	}
	if got := a.metric(`pspf_kafka_source_rebalances_total{pipeline="rollup",component="kafka",event="revoked"}`); got < 1 {
		t.Errorf("a: got %v revokes, want at least 1 (b joined)\n%s", got, logsA)
	}
	if lines := logsA.lines("partitions revoked: state checkpointed and let go"); len(lines) == 0 {
		t.Errorf("a: no revoke checkpointed its partitions' state\n%s", logsA)
	}
}
