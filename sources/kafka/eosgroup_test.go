package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
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

// committedOutputs reads the window outputs the agents produced to a
// topic, with read_committed, as a consumer downstream would.
type committedOutputs struct {
	t     testing.TB
	cl    *kgo.Client
	recs  []agent.Record
	seen  map[int32]int64     // last offset read, control records included
	other int                 // records that are no window output
	where map[string][]string // window ID: partition, offset and producer of each copy read
}

func readCommitted(t testing.TB, addrs []string, topic string) *committedOutputs {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DisableClientMetrics(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	t.Cleanup(cl.Close)
	return &committedOutputs{t: t, cl: cl, seen: map[int32]int64{}, where: map[string][]string{}}
}

// poll reads what is there now (one fetch, or none within 300ms).
func (o *committedOutputs) poll() {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	fs := o.cl.PollFetches(ctx)
	fs.EachError(func(_ string, _ int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) {
			o.t.Logf("read outputs: %v", err)
		}
	})
	fs.EachRecord(func(r *kgo.Record) {
		o.seen[r.Partition] = max(o.seen[r.Partition], r.Offset)
		if r.Attrs.IsControl() {
			return
		}
		rec, ok := windowJSON(r.Value)
		if !ok {
			o.other++
			return
		}
		o.recs = append(o.recs, rec)
		o.where[rec.ID] = append(o.where[rec.ID], fmt.Sprintf("p%d@%d producer %d/%d %s", r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch, r.Timestamp.UTC().Format("15:04:05.000")))
	})
}

// copies lists, for each window read more than once, where its copies
// are (at most n windows).
func (o *committedOutputs) copies(n int) string {
	var b strings.Builder
	ids := make([]string, 0, len(o.where))
	for id, w := range o.where {
		if len(w) > 1 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids[:min(n, len(ids))] {
		fmt.Fprintf(&b, "%s: %s\n", id, strings.Join(o.where[id], "; "))
	}
	return b.String()
}

// windows returns the window outputs read so far.
func (o *committedOutputs) windows() *windows {
	o.poll()
	return windowsOf(o.t, o.recs)
}

// toEnd reads up to the topic's end as of now (every transaction ended:
// the last offset of each partition is a marker, which it sees).
func (o *committedOutputs) toEnd(addrs []string, topic string, partitions int) {
	ends := endOffsets(o.t, addrs, topic, partitions)
	agenttest.Eventually(o.t, 30*time.Second, "the outputs read to their end", func() bool {
		o.poll()
		for p, end := range ends {
			if end > 0 && o.seen[p] < end-1 {
				return false
			}
		}
		return true
	}, nil)
}

// TestExactlyOnceGroup runs the window pipeline with `delivery:
// exactly_once` on its Kafka sink in agent processes of one group (the
// kafka store), under 5 seeds that pick the moments: two agents; one
// killed with SIGKILL mid-stream (open windows, a checkpoint's
// transaction possibly open) and started again on its data directory; a
// third joining; one stopped (SIGSTOP) past the session timeout and let
// go on, a zombie the group has moved on from; one leaving. A read_committed consumer of the output
// topic sees every window of the input exactly once, with exactly its
// readings: lost 0, duplicates 0 (counted by window ID, values compared).
// With at_least_once the same scenario sends the windows the killed
// agent had sent after its last checkpoint again.
func TestExactlyOnceGroup(t *testing.T) {
	t.Parallel()
	for seed := range uint64(5) {
		// One seed at a time (each runs three or four agent processes):
		// seeds in parallel, on two busy cores, once read a window
		// committed twice.
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			w, want := groupOutputs(t, seed, "exactly_once")
			missing, wrong, extra := w.compare(want)
			t.Logf("seed %d: %d windows expected, %d read committed, duplicates %d", seed, len(want), len(w.got), w.dups)
			if len(missing) > 0 || len(wrong) > 0 || len(extra) > 0 || len(w.conflicts) > 0 || w.dups != 0 {
				t.Errorf("missing %d %v\nwrong %d %v\nextra %d %v\nconflicts %v\nduplicates %d, want 0", len(missing), missing[:min(5, len(missing))],
					len(wrong), wrong[:min(5, len(wrong))], len(extra), extra[:min(5, len(extra))], w.conflicts, w.dups)
			}
		})
	}
}

// groupOutputs runs the scenario of TestExactlyOnceGroup with delivery
// and returns the outputs read committed and the windows of the input.
func groupOutputs(t *testing.T, seed uint64, delivery string) (*windows, map[winKey]*winAgg) {
	const devices, partitions = 24, 6
	rng := rand.New(rand.NewPCG(seed*0x9e3779b97f4a7c15+7, seed^0x5851f42d4c957f2d))
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(partitions, "tele", "rollup-out"), shortSessions())
	prod := newTelemetry(t, k.Addrs(), "tele", devices, partitions)
	prod.base = prod.base.Add(time.Duration(rng.IntN(60)) * time.Second)
	out := readCommitted(t, k.Addrs(), "rollup-out")
	dirs := map[string]string{}
	var logs []*agenttest.LogBuffer
	var names []string
	all := allLogs{&logs, &names}
	start := func(name string) *child {
		if dirs[name] == "" {
			dirs[name] = t.TempDir()
		}
		c := startChild(t, k.Addrs(), dirs[name], envWinDelivery+"="+delivery, envWinName+"="+name, envWinInterval+"=300ms", envWinLevel+"=DEBUG")
		logs, names = append(logs, c.stderr), append(names, name)
		return c
	}
	caughtUp := func(what string) {
		closed := prod.closed()
		agenttest.Eventually(t, 90*time.Second, what, func() bool { return out.windows().complete(closed) }, all)
	}
	pause := func() { <-time.After(time.Duration(rng.IntN(600)) * time.Millisecond) }
	agents := map[string]*child{"a": start("a"), "b": start("b")}
	prod.produce(30)
	caughtUp("the windows closed so far, two agents")
	prod.produce(6 + rng.IntN(6))
	pause()
	victim := []string{"a", "b"}[rng.IntN(2)]
	agents[victim].signal(syscall.SIGKILL)
	prod.produce(20)
	agents[victim] = start(victim)
	caughtUp("the windows closed so far, after the kill")
	prod.produce(6 + rng.IntN(6))
	agents["c"] = start("c")
	pause()
	prod.produce(10)
	// A zombie: an agent stopped (SIGSTOP) past the session timeout,
	// possibly inside a transaction, is out of the group when it goes
	// on; its transactions must not commit what the others took over.
	zombie := []string{"a", "b", "c"}[rng.IntN(3)]
	stalled := agents[zombie].stderr
	agents[zombie].cmd.Process.Signal(syscall.SIGSTOP)
	prod.produce(10)
	agenttest.Eventually(t, 60*time.Second, "the group to move on without the stopped agent", func() bool {
		state, ids := groupMembers(t, k.Addrs(), "rollup")
		return state == "Stable" && len(ids) > 0 && !slices.ContainsFunc(ids, func(id string) bool {
			return id == "pspf-edge-"+zombie || strings.HasPrefix(id, "pspf-edge-"+zombie+"-")
		})
	}, all)
	agents[zombie].cmd.Process.Signal(syscall.SIGCONT)
	prod.produce(10)
	leaver := []string{"a", "b", "c"}[rng.IntN(3)]
	agents[leaver].signal(syscall.SIGTERM)
	prod.produce(20)
	want := prod.close()
	agenttest.Eventually(t, 120*time.Second, "every window read committed", func() bool { return out.windows().complete(want) }, all)
	for _, c := range agents {
		c.signal(syscall.SIGTERM)
	}
	out.toEnd(k.Addrs(), "rollup-out", partitions)
	if out.other > 0 {
		t.Errorf("%d records on the output topic are no window output", out.other)
	}
	t.Logf("seed %d: killed %s, stalled %s, %s left; the stalled agent's transactions refused: %d, partitions lost: %d",
		seed, victim, zombie, leaver, len(stalled.Lines("transaction aborted")), len(stalled.Lines("partitions lost")))
	if w := windowsOf(t, out.recs); w.dups > 0 {
		t.Logf("a window read committed twice; the copies (partition@offset, producer id/epoch, record time):\n%s\nthe agents' logs:\n%s", out.copies(50), all)
	}
	return windowsOf(t, out.recs), want
}

// allLogs shows the logs of every agent started.
type allLogs struct {
	logs  *[]*agenttest.LogBuffer
	names *[]string // the agent of each log
}

func (a allLogs) String() string {
	var b strings.Builder
	for i, l := range *a.logs {
		fmt.Fprintf(&b, "--- agent %s (process %d)\n%s", (*a.names)[i], i, l)
	}
	return b.String()
}

// TestExactlyOnceConfig: a Kafka sink with delivery: exactly_once in a
// pipeline whose source is a Kafka group member is refused when parsed
// unless the rest makes it exactly-once, with the rule on the sink's
// line; without a group (explicit partitions) it keeps the sink's own
// exactly-once.
func TestExactlyOnceConfig(t *testing.T) {
	const (
		src      = "  - kafka: {brokers: [\"k1:9092\"], topics: [tele], group: g}\n"
		windowOp = "operators:\n  - decode: {format: json}\n  - window: {size: 1m, aggregates: [{fn: count}]}\n"
		eos      = "  - name: out\n    kafka: {brokers: [\"k1:9092\"], topic: out, delivery: exactly_once}\n"
		kafkaSt  = "state: {store: kafka, changelog: st}\n"
		fileSink = "  - file: {path: /tmp/x.ndjson}\n"
	)
	cases := []struct {
		name, text, err string
	}{
		{"ok", "sources:\n" + src + windowOp + "sinks:\n" + eos + kafkaSt, ""},
		{"bbolt", "sources:\n" + src + windowOp + "sinks:\n" + eos, "needs state: {store: kafka, changelog: TOPIC}, got store bbolt"},
		{"no stateful operators", "sources:\n" + src + "sinks:\n" + eos + kafkaSt, "needs stateful operators"},
		{"two sinks", "sources:\n" + src + windowOp + "sinks:\n" + eos + fileSink + kafkaSt, "must be the pipeline's only sink"},
		{"two sources", "sources:\n" + src + "  - name: k2\n    kafka: {brokers: [\"k1:9092\"], topics: [t2], group: g}\n" + windowOp + "sinks:\n" + eos + kafkaSt, "the kafka source must be the pipeline's only source"},
		{"other cluster", "sources:\n" + src + windowOp + "sinks:\n  - name: out\n    kafka: {brokers: [\"k2:9092\"], topic: out, delivery: exactly_once}\n" + kafkaSt, `must be the source's brokers [k1:9092]`},
		{"explicit partitions", "sources:\n  - kafka: {brokers: [\"k1:9092\"], partitions: {tele: [0]}, group: g}\nsinks:\n" + eos, ""},
	}
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["window"] = window.Factory()
	reg.Sinks["kafka"] = kafkasink.Factory()
	reg.Sinks["file"] = file.Factory()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := reg.ParsePipeline("p.yaml", []byte(c.text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
			switch {
			case c.err == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Errorf("got %v, want an error with %q", err, c.err)
			case c.err != "" && !strings.Contains(err.Error(), "p.yaml:"):
				t.Errorf("got %v, want the file and line", err)
			}
		})
	}
}
