package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/decode"
)

// producer writes records {"i":N} keyed k<N%keys>, with a header, to a
// topic, synchronously: once produce returns, Kafka has them.
type producer struct {
	t     testing.TB
	cl    *kgo.Client
	topic string
	keys  int
	next  int
	done  atomic.Int64 // records acknowledged, for other goroutines
}

// produced returns how many records Kafka has acknowledged.
func (p *producer) produced() int { return int(p.done.Load()) }

func newProducer(t testing.TB, addrs []string, topic string, keys int) *producer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0), kgo.DisableClientMetrics(),
		kgo.RetryTimeout(time.Minute))
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Cleanup(cl.Close)
	return &producer{t: t, cl: cl, topic: topic, keys: keys}
}

// produce writes the next n records and returns once Kafka acknowledged
// them all.
func (p *producer) produce(n int) {
	p.t.Helper()
	recs := make([]*kgo.Record, n)
	for j := range recs {
		i := p.next + j
		recs[j] = &kgo.Record{Key: []byte("k" + strconv.Itoa(i%p.keys)), Value: []byte(`{"i":` + strconv.Itoa(i) + `}`),
			Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t" + strconv.Itoa(i))}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		p.t.Fatalf("produce: %v", err)
	}
	p.next += n
	p.done.Store(int64(p.next))
}

// stream produces total records in steps of per, one step every interval,
// until total or stop; it returns when done.
func (p *producer) stream(total, per int, interval time.Duration, stop <-chan struct{}) {
	for p.next < total {
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
		p.produce(min(per, total-p.next))
	}
}

// pipe is a pipeline with a kafka source, a json decoder and a recording
// sink, on a disk log.
type pipe struct {
	p      *runner.Pipeline
	m      *runner.Metrics
	sink   *agenttest.RecordingSink
	cancel context.CancelFunc
	done   chan error
}

// startPipe runs a pipeline named name with the kafka source sourceYAML
// (a flow mapping) in dir.
func startPipe(t testing.TB, name, sourceYAML, dir string, logger *slog.Logger) *pipe {
	t.Helper()
	sink := &agenttest.RecordingSink{}
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Sinks["record"] = agent.Typed[agent.Sink]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Sink, error) { return sink, nil })
	text := "sources:\n  - kafka: " + sourceYAML + "\noperators:\n  - decode: {format: json}\nsinks:\n  - record: {}\n"
	spec, err := reg.ParsePipeline(name+".yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: dir, AgentName: "gw1",
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

// stop ends the pipeline (its source commits and leaves) and waits for it.
func (r *pipe) stop(t testing.TB) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Errorf("pipeline did not stop within a minute")
	}
	r.done = nil
}

// metric returns the value of the series of the Prometheus text that
// starts with prefix (name{labels...), or -1.
func (r *pipe) metric(prefix string) float64 {
	var b strings.Builder
	r.m.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// seen is what sinks received, by payload.
type seen struct {
	count map[int]int      // i -> times seen
	parts map[int]int64    // i -> kafka.partition
	offs  map[int]int64    // i -> kafka.offset
	ids   map[string]int   // record ID -> i
	order map[string]error // per sink: the first per-partition order violation
}

// tally counts the records of the sinks by their payload's i, and checks
// in each sink that the first occurrences of a partition's records come in
// offset order, that every record carries its origin (topic, partition,
// offset, header) and that no ID names two payloads.
func tally(t testing.TB, sinks ...*agenttest.RecordingSink) *seen {
	t.Helper()
	s := &seen{count: map[int]int{}, parts: map[int]int64{}, offs: map[int]int64{}, ids: map[string]int{}, order: map[string]error{}}
	for k, sink := range sinks {
		last := map[int64]int64{}
		first := map[int]bool{}
		for _, r := range sink.Records() {
			fi, fp, fo, fh := r.Field("i"), r.Field(FieldPartition), r.Field(FieldOffset), r.Field(HeaderPrefix+"trace")
			if fi == nil || fp == nil || fo == nil || fh == nil || r.Field(FieldTopic) == nil {
				t.Fatalf("record %s lacks its fields: %+v", r.ID, r.Fields)
			}
			i := int(fi.Int)
			if fh.Str != "t"+strconv.Itoa(i) {
				t.Fatalf("record %d: header trace %q, want t%d", i, fh.Str, i)
			}
			if j, ok := s.ids[r.ID]; ok && j != i {
				t.Errorf("ID %s names records %d and %d", r.ID, j, i)
			}
			s.ids[r.ID] = i
			s.count[i]++
			s.parts[i], s.offs[i] = fp.Int, fo.Int
			if first[i] {
				continue
			}
			first[i] = true
			if l, ok := last[fp.Int]; ok && fo.Int < l && s.order["sink"+strconv.Itoa(k)] == nil {
				s.order["sink"+strconv.Itoa(k)] = fmt.Errorf("partition %d: offset %d after %d", fp.Int, fo.Int, l)
			}
			last[fp.Int] = max(last[fp.Int], fo.Int)
		}
	}
	return s
}

// lost returns the payloads 0..n-1 no sink received, and the duplicates.
func (s *seen) lost(n int) (lost []int, dups int) {
	for i := range n {
		c := s.count[i]
		if c == 0 {
			lost = append(lost, i)
		} else {
			dups += c - 1
		}
	}
	return lost, dups
}

// all reports whether every payload 0..n-1 arrived.
func (s *seen) all(n int) bool {
	for i := range n {
		if s.count[i] == 0 {
			return false
		}
	}
	return true
}

// committed returns the group's committed offsets of topic, by partition.
func committed(t testing.TB, addrs []string, group, topic string, partitions int) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DisableClientMetrics())
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rt.Partitions = append(rt.Partitions, int32(p))
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	out := map[int32]int64{}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			out[p.Partition] = p.Offset
		}
	}
	return out
}

// endOffsets returns the high watermarks of topic, by partition.
func endOffsets(t testing.TB, addrs []string, topic string, partitions int) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DisableClientMetrics())
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = int32(p), -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("list offsets: %v", err)
	}
	out := map[int32]int64{}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			out[p.Partition] = p.Offset
		}
	}
	return out
}

// sortedKeys returns a map's keys in order, for messages.
func sortedKeys(m map[int32]int64) []int32 {
	out := make([]int32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// groupMembers returns a consumer group's state (Stable, PreparingRebalance,
// ...) and its members' client IDs.
func groupMembers(t testing.TB, addrs []string, group string) (string, []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DisableClientMetrics())
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{group}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("describe groups: %v", err)
	}
	for _, g := range resp.Groups {
		if g.Group != group {
			continue
		}
		var ids []string
		for _, m := range g.Members {
			ids = append(ids, m.ClientID)
		}
		return g.State, ids
	}
	return "", nil
}
