package kafka

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func TestREADMESample(t *testing.T) {
	reg := agent.NewRegistry()
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
	reg := agent.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["kafka"] = Factory()
	for _, tc := range []struct{ body, want string }{
		{"{topic: t}", "brokers: must list at least one broker"},
		{"{brokers: [a:1], topic: 't.{site'}", "topic: template"},
		{"{brokers: [a:1], topic: t, acks: al}", `acks: must be all, 1 or 0, got "al"`},
		{"{brokers: [a:1], topic: t, delivery: exactly_once, acks: '1'}", "must be all with delivery: exactly_once"},
		{"{brokers: [a:1], topic: t, tls: {cert_file: x}}", "cert_file and key_file go together"},
	} {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{simulate: {}}]\nsinks: [{kafka: "+tc.body+"}]\n"), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
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
			c.TLS = TLSConfig{Enabled: true, CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, ServerName: "localhost"}
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
	t.Run("unknown-topic", func(t *testing.T) {
		s := connect(t, testConfig(k.Addr(), "missing"))
		err := s.Write(context.Background(), makeRecords(1, 3, 1))
		var rej *agent.RejectedError
		if !errors.As(err, &rej) || len(rej.Index) != 3 || !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("got %v, want all 3 rejected for the unknown topic", err)
		}
	})
	t.Run("not-authorized", func(t *testing.T) {
		ka := testbroker.StartKafka(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.SeedTopics(1, "t"),
			kfake.Superuser("PLAIN", "admin", "admin"),
			kfake.User("PLAIN", "gw", "pw",
				kfake.ACL{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
				kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "t", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true}))
		cfg := testConfig(ka.Addr(), "t")
		cfg.SASL = SASLConfig{Mechanism: "plain", Username: "gw", Password: "pw"}
		s := connect(t, cfg)
		err := s.Write(context.Background(), makeRecords(1, 3, 1))
		if !agent.IsPermanent(err) || !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("got %v, want a permanent authorization failure", err)
		}
	})
}

// pipelineWith runs a pipeline of src into a kafka sink entry (yaml body
// after "kafka:") over the real disk log, until the source ends and the log
// is drained.
func pipelineWith(t *testing.T, src agent.Source, sinkYAML string, dataDir string) *agent.Metrics {
	t.Helper()
	reg := agent.NewRegistry()
	reg.Sources["steady"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["kafka"] = Factory()
	text := "sources: [{steady: {}}]\nsinks:\n  - kafka: " + sinkYAML + "\n    retry: {initial: 20ms, max: 200ms}\n    batch: {max_records: 200}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(text), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	m := agent.NewMetrics()
	logger := slog.New(slog.DiscardHandler)
	p, err := agent.NewPipeline(spec, agent.PipelineDeps{Registry: reg, Metrics: m, DataDir: dataDir, AgentName: "gw1", OpenLog: agent.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 40 * time.Second})
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
	pipelineWith(t, src, "{brokers: ["+k.Addr()+"], topic: t, linger: 1ms, write_timeout: 1s, request_timeout: 1s}", t.TempDir())
	got := consume(t, k.Addr(), 3000, 20*time.Second, []string{"t"})
	dups := checkDelivery(t, got, 3000)
	t.Logf("%d injected failures, %d records, %d duplicates", min(n, 12)/2, len(got), dups)
}

func TestOutageEveryRecordArrivesInKeyOrder(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(4, "t"))
	src := &steadySource{total: 6000, per: 20, keys: 8, interval: time.Millisecond}
	go func() {
		time.Sleep(300 * time.Millisecond)
		k.Stop()
		time.Sleep(3 * time.Second)
		k.Start()
	}()
	dir := t.TempDir()
	m := pipelineWith(t, src, "{brokers: ["+k.Addr()+"], topic: t, linger: 1ms, write_timeout: 2s, request_timeout: 1s, dial_timeout: 500ms}", dir)
	got := consume(t, k.Addr(), 6000, 20*time.Second, []string{"t"})
	dups := checkDelivery(t, got, 6000)
	var b strings.Builder
	m.WritePrometheus(&b)
	retries := ""
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "pspf_sink_retries_total") {
			retries = l
		}
	}
	t.Logf("%d records, %d duplicates, %s", len(got), dups, retries)
	if retries == "" || strings.HasSuffix(retries, " 0") {
		t.Errorf("got %q, want retries during the outage", retries)
	}
	// Disk back to baseline: the drained log keeps at most its active segment.
	if sz := dirSize(t, dir+"/log"); sz > 20<<20 {
		t.Errorf("log holds %d bytes after the drain, want at most one segment", sz)
	}
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
