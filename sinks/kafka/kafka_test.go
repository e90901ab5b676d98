package kafka

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func TestREADMESample(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["kafka"] = Factory()
	os.Setenv("KAFKA_PASSWORD", "secret")
	specs := agenttest.CheckREADMESamples(t, "README.md", reg)
	if len(specs) != 1 {
		t.Fatalf("got %d samples, want 1", len(specs))
	}
	c := specs[0].Sinks[0].Config.(*Config)
	if c.SASL.Password != "secret" || c.Topic != "telemetry.{site}" || c.Compression != "lz4" {
		t.Errorf("got %+v, want the sample's values", c)
	}
}

func TestConfigErrors(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["kafka"] = Factory()
	for _, tc := range []struct{ body, want string }{
		{"{topic: t}", "brokers: must list at least one broker"},
		{"{brokers: [a:1], topic: 't.{site'}", "topic: template"},
		{"{brokers: [a:1], topic: t, acks: al}", `acks: must be all, 1 or 0, got "al"`},
		{"{brokers: [a:1], topic: t, delivery: exactly_once, acks: '1'}", "must be all with delivery: exactly_once"},
		{"{brokers: [a:1], topic: t, tls: {cert_file: x}}", "cert_file and key_file go together"},
		{"{brokers: [a:1], topic: t, unreachable_after: 50ms}", "unreachable_after: must be between 100ms and write_timeout (30s)"},
		{"{brokers: [a:1], topic: t, write_timeout: 10s, unreachable_after: 20s}", "unreachable_after: must be between 100ms and write_timeout (10s)"},
		{"{brokers: [a:1], topic: t, missing_topic: drop}", `missing_topic: must be retry or dead_letter, got "drop"`},
		{"{brokers: [a:1], topic: t, unauthorized: ignore}", `unauthorized: must be retry or dead_letter, got "ignore"`},
	} {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{simulate: {}}]\nsinks: [{kafka: "+tc.body+"}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestWriteCodecsKeysHeaders(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(4, "none", "gzip", "snappy", "lz4", "zstd"))
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			cfg := testConfig(k.Addr(), codec)
			cfg.Compression = codec
			s := connect(t, cfg)
			recs := makeRecords(1, 300, 7)
			if err := s.Write(context.Background(), recs); err != nil {
				t.Fatalf("write: %v", err)
			}
			got := consume(t, k.Addr(), 300, 10*time.Second, []string{codec})
			if len(got) != 300 {
				t.Fatalf("got %d records, want 300", len(got))
			}
			part := map[string]int32{}
			ids := map[string]bool{}
			for _, r := range got {
				id := header(r, HeaderID)
				ids[id] = true
				if header(r, HeaderAgent) != "gw1" || header(r, HeaderPipeline) != "p" || header(r, HeaderSource) != "sim" {
					t.Fatalf("got headers %v, want agent gw1, pipeline p, source sim", r.Headers)
				}
				if p, ok := part[string(r.Key)]; ok && p != r.Partition {
					t.Errorf("key %s in partitions %d and %d, want one", r.Key, p, r.Partition)
				}
				part[string(r.Key)] = r.Partition
				if !strings.Contains(string(r.Value), `"_id":"`+id+`"`) {
					t.Errorf("value %s does not carry _id %s", r.Value, id)
				}
				if r.Timestamp.Unix() != 1700000000 {
					t.Errorf("got timestamp %v, want the event time", r.Timestamp)
				}
			}
			if len(ids) != 300 || len(part) != 7 {
				t.Errorf("got %d ids over %d keys, want 300 over 7", len(ids), len(part))
			}
		})
	}
}

func TestEncodings(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(1, "msgpack", "raw"))
	r := agent.Record{ID: "p:9", Seq: 9, Key: "k", Raw: []byte("21.5;ok"), Fields: nil}
	for _, enc := range []string{"msgpack", "raw"} {
		cfg := testConfig(k.Addr(), enc)
		cfg.Encoding = enc
		s := connect(t, cfg)
		if err := s.Write(context.Background(), []agent.Record{r}); err != nil {
			t.Fatalf("%s: write: %v", enc, err)
		}
		got := consume(t, k.Addr(), 1, 10*time.Second, []string{enc})
		if len(got) != 1 {
			t.Fatalf("%s: got %d records, want 1", enc, len(got))
		}
		switch enc {
		case "raw":
			if string(got[0].Value) != "21.5;ok" {
				t.Errorf("raw: got %q, want the payload", got[0].Value)
			}
		case "msgpack":
			var back agent.Record
			if _, err := back.UnmarshalMsg(got[0].Value); err != nil || back.ID != "p:9" || string(back.Raw) != "21.5;ok" {
				t.Errorf("msgpack: got %+v, %v, want the record back", back, err)
			}
		}
	}
}

func TestTopicTemplate(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(1, "tele.s0", "tele.s1"))
	s := connect(t, testConfig(k.Addr(), "tele.{site}"))
	recs := makeRecords(1, 10, 3)
	recs[4].Fields = recs[4].Fields[:1] // no site
	err := s.Write(context.Background(), recs)
	var rej *agent.RejectedError
	if !errors.As(err, &rej) || len(rej.Index) != 1 || rej.Index[0] != 4 || !errors.Is(rej.Errs[0], agent.ErrTemplateField) {
		t.Fatalf("got %v, want record 4 rejected for its missing field", err)
	}
	got := consume(t, k.Addr(), 9, 10*time.Second, []string{"tele.s0", "tele.s1"})
	if len(got) != 9 {
		t.Fatalf("got %d records, want 9", len(got))
	}
	for _, r := range got {
		if !strings.Contains(string(r.Value), `"site":"`+strings.TrimPrefix(r.Topic, "tele.")+`"`) {
			t.Errorf("record %s in topic %s", r.Value, r.Topic)
		}
	}
}

func TestSecurity(t *testing.T) {
	certs := testbroker.NewCerts(t)
	cases := []struct {
		name string
		opts []kfake.Opt
		set  func(*Config)
	}{
		{"tls-client-cert", []kfake.Opt{kfake.TLS(certs.ServerTLS(t))}, func(c *Config) {
			c.TLS = agent.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, ServerName: "localhost"}
		}},
		{"sasl-plain", []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "gw", "pw")}, func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "plain", Username: "gw", Password: "pw"}
		}},
		{"sasl-scram-sha-256", []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "gw", "pw")}, func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "scram-sha-256", Username: "gw", Password: "pw"}
		}},
		{"sasl-scram-sha-512", []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "gw", "pw")}, func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "scram-sha-512", Username: "gw", Password: "pw"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := testbroker.StartKafka(t, append(tc.opts, kfake.SeedTopics(1, "t"))...)
			cfg := testConfig(k.Addr(), "t")
			tc.set(&cfg)
			s := connect(t, cfg)
			if err := s.Write(context.Background(), makeRecords(1, 5, 2)); err != nil {
				t.Fatalf("write: %v", err)
			}
			// The same settings without credentials must not get through.
			bad := testConfig(k.Addr(), "t")
			bad.DialTimeout, bad.RequestTimeout = time.Second, time.Second
			b, _ := New(bad, testEnv())
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := b.Connect(ctx); err == nil {
				b.Close(ctx)
				t.Errorf("connect without credentials: got nil, want an error")
			}
		})
	}
}

func TestPermanentErrors(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(1, "t"))
	t.Run("too-large", func(t *testing.T) {
		cfg := testConfig(k.Addr(), "t")
		cfg.BatchBytes = 4 << 10
		s := connect(t, cfg)
		recs := makeRecords(1, 5, 1)
		recs[2].Fields = append(recs[2].Fields, agent.String("blob", strings.Repeat("x", 8<<10)))
		err := s.Write(context.Background(), recs)
		var rej *agent.RejectedError
		if !errors.As(err, &rej) || len(rej.Index) != 1 || rej.Index[0] != 2 || !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("got %v, want record 2 rejected as too large", err)
		}
		if !agent.IsPermanent(err) {
			t.Errorf("got retryable, want permanent")
		}
	})
	// A missing topic and a missing ACL are retried by default (the
	// cluster's operators fix them); dead_letter makes them permanent.
	ka := testbroker.StartKafka(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.SeedTopics(1, "t"),
		kfake.Superuser("PLAIN", "admin", "admin"),
		kfake.User("PLAIN", "gw", "pw",
			kfake.ACL{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "t", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true}))
	for _, tc := range []struct {
		name, setting string
		want          error
	}{
		{"unknown-topic", "", kerr.UnknownTopicOrPartition},
		{"unknown-topic", "dead_letter", kerr.UnknownTopicOrPartition},
		{"not-authorized", "", kerr.TopicAuthorizationFailed},
		{"not-authorized", "dead_letter", kerr.TopicAuthorizationFailed},
	} {
		t.Run(tc.name+"/"+cmp.Or(tc.setting, "default"), func(t *testing.T) {
			var cfg Config
			if tc.name == "unknown-topic" {
				cfg = testConfig(k.Addr(), "missing")
				cfg.MissingTopic = cmp.Or(tc.setting, cfg.MissingTopic)
			} else {
				cfg = testConfig(ka.Addr(), "t")
				cfg.SASL = SASLConfig{Mechanism: "plain", Username: "gw", Password: "pw"}
				cfg.Unauthorized = cmp.Or(tc.setting, cfg.Unauthorized)
			}
			s := connect(t, cfg)
			err := s.Write(context.Background(), makeRecords(1, 3, 1))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var rej *agent.RejectedError
			switch {
			case tc.setting == "dead_letter" && (!errors.As(err, &rej) || len(rej.Index) != 3):
				t.Errorf("got %v, want all 3 records refused for good", err)
			case tc.setting == "" && agent.IsPermanent(err):
				t.Errorf("got a permanent error %v, want a retryable one", err)
			}
		})
	}
}

// pipelineWith runs a pipeline of src into a kafka sink entry (yaml body
// after "kafka:") over the real disk log, with top (whole lines) at the head
// of the pipeline file, until the source ends and the log is drained.
func pipelineWith(t *testing.T, src agent.Source, sinkYAML, dataDir, top string) *runner.Metrics {
	t.Helper()
	return pipelineWithMetrics(t, runner.NewMetrics(), src, sinkYAML, dataDir, top)
}

// pipelineWithMetrics is pipelineWith into m, which the test may read while
// the pipeline runs.
func pipelineWithMetrics(t *testing.T, m *runner.Metrics, src agent.Source, sinkYAML, dataDir, top string) *runner.Metrics {
	t.Helper()
	reg := runner.NewRegistry()
	reg.Sources["steady"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["kafka"] = Factory()
	text := top + "sources: [{steady: {}}]\nsinks:\n  - kafka: " + sinkYAML + "\n    retry: {initial: 20ms, max: 200ms}\n    batch: {max_records: 200}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logger := slog.New(slog.DiscardHandler)
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: dataDir, AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 40 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	return m
}

func TestInjectedProduceErrorsRetriedWithoutLoss(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(3, "t"))
	c := k.Cluster()
	n := 0
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		n++
		switch {
		case n > 12:
			c.DropControl()
			return nil, nil, false
		case n%4 == 1: // drop the connection mid-request
			return nil, errors.New("injected disconnect"), true
		case n%4 == 2: // answer every partition with a retryable error
			pr := req.(*kmsg.ProduceRequest)
			resp := pr.ResponseKind().(*kmsg.ProduceResponse)
			for _, tp := range pr.Topics {
				rt := kmsg.NewProduceResponseTopic()
				rt.Topic = tp.Topic
				for _, p := range tp.Partitions {
					rp := kmsg.NewProduceResponseTopicPartition()
					rp.Partition = p.Partition
					rp.ErrorCode = kerr.NotLeaderForPartition.Code
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
			return resp, nil, true
		}
		return nil, nil, false
	})
	src := &steadySource{total: 3000, per: 50, keys: 5, interval: time.Millisecond}
	pipelineWith(t, src, "{brokers: ["+k.Addr()+"], topic: t, linger: 1ms, write_timeout: 1s, request_timeout: 1s}", t.TempDir(), "")
	got := consume(t, k.Addr(), 3000, 20*time.Second, []string{"t"})
	dups := checkDelivery(t, got, 3000)
	t.Logf("%d injected failures, %d records, %d duplicates", min(n, 12)/2, len(got), dups)
}

// TestOutageEveryRecordArrivesInKeyOrder takes the Kafka listener away under
// a steady stream of 1 KiB records until tens of MB of backlog are on disk,
// then brings it back. Every record must arrive, per key in order
// (oldest_first); the heap must stay flat while the backlog grows, since the
// backlog belongs on disk; and once drained, the log must be back to its
// active segment. Everything is paced by record counts, not by time.
//
// The heap is measured during the outage only: once the cluster is back, the
// in-process kfake holds what it received in the test's own heap.
func TestOutageEveryRecordArrivesInKeyOrder(t *testing.T) {
	const (
		pad       = 1 << 10 // bytes of each record's pad field: what the log holds, not what Kafka gets
		stopAt    = 2_000   // records emitted before the listener goes away
		outage    = 40_000  // records emitted while it is away: ~42 MB of backlog
		total     = stopAt + outage + 4_000
		segment   = 1 << 20
		heapSlack = 8 << 20 // live heap growth allowed during the outage: a fifth of the backlog
	)
	k := testbroker.StartKafka(t, kfake.SeedTopics(4, "t"))
	hold := make(chan struct{})
	src := &steadySource{total: total, per: 200, keys: 8, interval: time.Millisecond, pad: pad, hold: hold}
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	var heap []uint64
	var peakDisk, drainedDisk int64
	m := runner.NewMetrics()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(hold)
		if !waitEmitted(t, src, stopAt) {
			return
		}
		k.Stop()
		for next := stopAt + 4_000; next <= stopAt+outage; next += 4_000 {
			if !waitEmitted(t, src, next) {
				break
			}
			heap = append(heap, heapLive())
			peakDisk = max(peakDisk, dirSize(t, logDir))
		}
		// The outage lasts until the sink has given up on a write at
		// least once (write_timeout), however fast the backlog was
		// written: the retry is what the test checks, not a duration.
		wait.Until(30*time.Second, func() bool {
			r := metricLine(m, "pspf_sink_retries_total")
			return r != "" && !strings.HasSuffix(r, " 0")
		})
		k.Start()
		// Drained: the log is back to at most its active segment (plus
		// the one the stream may have just sealed) while the stream goes on.
		wait.Until(60*time.Second, func() bool {
			drainedDisk = dirSize(t, logDir)
			return drainedDisk <= 2*segment
		})
	}()
	pipelineWithMetrics(t, m, src, "{brokers: ["+k.Addr()+"], topic: t, encoding: raw, compression: none, linger: 1ms, write_timeout: 2s, request_timeout: 1s, dial_timeout: 500ms}", dir, "buffer: {segment_bytes: 1MiB}\n")
	<-done
	got := consume(t, k.Addr(), total, 30*time.Second, []string{"t"})
	dups := checkDelivery(t, got, total)
	retries := metricLine(m, "pspf_sink_retries_total")
	t.Logf("%d records, %d duplicates, %s; disk peak %d MB, after the drain %d kB; live heap during the outage (MB): %v",
		len(got), dups, retries, peakDisk>>20, drainedDisk>>10, mbs(heap))
	if retries == "" || strings.HasSuffix(retries, " 0") {
		t.Errorf("got %q, want retries during the outage", retries)
	}
	if peakDisk < 4*heapSlack {
		t.Fatalf("got a backlog of %d bytes on disk, want at least %d for the heap check to mean something", peakDisk, 4*heapSlack)
	}
	// The first sample may still hold the cluster that was just stopped
	// (kfake lives in this process); from the second on, the backlog grows
	// by ~35 MB and the live heap must not follow it.
	base := slices.Min(heap)
	for i, h := range heap[1:] {
		if h > base+heapSlack {
			t.Errorf("live heap %d MB at sample %d, want at most %d MB (the lowest sample) + %d MB", h>>20, i+1, base>>20, heapSlack>>20)
		}
	}
	if drainedDisk > 2*segment {
		t.Errorf("log holds %d bytes after the drain, want at most %d (the active segment)", drainedDisk, 2*segment)
	}
	if sz := dirSize(t, logDir); sz > 2*segment {
		t.Errorf("log holds %d bytes after the pipeline stopped, want at most %d", sz, 2*segment)
	}
}

// waitEmitted waits until src has emitted at least n records; after a
// minute it reports an error and false. Any goroutine may call it.
func waitEmitted(t *testing.T, src *steadySource, n int) bool {
	if wait.Until(time.Minute, func() bool { return src.emitted() >= n }) {
		return true
	}
	t.Errorf("the source emitted %d records in a minute, want %d", src.emitted(), n)
	return false
}

// heapLive returns the bytes of live heap objects after a full collection.
func heapLive() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func mbs(v []uint64) []uint64 {
	out := make([]uint64, len(v))
	for i, x := range v {
		out[i] = x >> 20
	}
	return out
}

func metricLine(m *runner.Metrics, name string) string {
	var b strings.Builder
	m.WritePrometheus(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, name) {
			return l
		}
	}
	return ""
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			n += info.Size()
		}
	}
	return n
}

// TestClientMetricsOffByDefault checks that the client asks the broker for a
// KIP-714 metrics subscription only with client_metrics on: franz-go's
// metrics push takes 8 MiB of heap each time.
func TestClientMetricsOffByDefault(t *testing.T) {
	for _, on := range []bool{false, true} {
		k := testbroker.StartKafka(t, kfake.SeedTopics(1, "t"))
		var asked atomic.Int32
		k.Cluster().ControlKey(int16(kmsg.GetTelemetrySubscriptions), func(kmsg.Request) (kmsg.Response, error, bool) {
			k.Cluster().KeepControl()
			asked.Add(1)
			return nil, nil, false
		})
		cfg := testConfig(k.Addr(), "t")
		cfg.ClientMetrics = on
		s := connect(t, cfg)
		if err := s.Write(context.Background(), makeRecords(0, 10, 2)); err != nil {
			t.Fatalf("client_metrics %v: write: %v", on, err)
		}
		// The reading client must not ask either.
		if got := consume(t, k.Addr(), 10, 10*time.Second, []string{"t"}, kgo.DisableClientMetrics()); len(got) != 10 {
			t.Fatalf("client_metrics %v: %d records arrived, want 10", on, len(got))
		}
		if on {
			if !wait.Until(10*time.Second, func() bool { return asked.Load() > 0 }) {
				t.Errorf("client_metrics on: the client never asked for a metrics subscription")
			}
		} else if n := asked.Load(); n != 0 {
			t.Errorf("client_metrics off: the client asked for a metrics subscription %d times", n)
		}
		s.Close(context.Background())
	}
}
