package kafka

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// readAll reads and acks batches until want records came, and returns
// them (copies: the source reuses its batches' memory after the ack).
func readAll(t *testing.T, s *Source, want int) []agent.Record {
	t.Helper()
	var out []agent.Record
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want {
		if time.Now().After(deadline) {
			t.Fatalf("got %d records, want %d", len(out), want)
		}
		recs, ack := read(t, s, 20*time.Second)
		for _, r := range recs {
			r.Fields = append([]agent.Field(nil), r.Fields...)
			r.Raw = append([]byte(nil), r.Raw...)
			out = append(out, r)
		}
		ack(context.Background(), nil)
	}
	return out
}

// TestExplicitPartitions consumes two of four partitions directly, without
// joining the group, commits to the group's offsets, and after a restart
// goes on from them.
func TestExplicitPartitions(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(4, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 16)
	prod.produce(400)
	ends := endOffsets(t, k.Addrs(), "cmds", 4)
	mine := ends[0] + ends[2]
	cfg := func(c *Config) { c.Partitions, c.Group = map[string][]int32{"cmds": {0, 2}}, "direct" }
	logs := &agenttest.LogBuffer{}
	s := testSource(t, k.Addrs(), cfg, logs)
	recs := readAll(t, s, int(mine))
	for _, r := range recs {
		if p := r.Field(FieldPartition).Int; p != 0 && p != 2 {
			t.Fatalf("got a record of partition %d, want only 0 and 2", p)
		}
	}
	s.Close(context.Background())
	got := committed(t, k.Addrs(), "direct", "cmds", 4)
	for p, want := range map[int32]int64{0: ends[0], 1: -1, 2: ends[2], 3: -1} {
		if got[p] != want {
			t.Errorf("partition %d: committed %d, want %d\n%s", p, got[p], want, logs)
		}
	}
	prod.produce(200)
	ends2 := endOffsets(t, k.Addrs(), "cmds", 4)
	s = testSource(t, k.Addrs(), cfg, nil)
	recs = readAll(t, s, int(ends2[0]+ends2[2]-mine))
	for _, r := range recs {
		if o, p := r.Field(FieldOffset).Int, r.Field(FieldPartition).Int; o < ends[int32(p)] {
			t.Fatalf("partition %d: got offset %d again after the restart, want from %d on", p, o, ends[int32(p)])
		}
	}
}

// TestNackRereads nacks a batch: the source restarts its client and reads
// the batch again, from the offset after the last durable one.
func TestNackRereads(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(1, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 1)
	prod.produce(300)
	s := testSource(t, k.Addrs(), func(c *Config) { c.Topics, c.BatchSize = []string{"cmds"}, 100 }, nil)
	r1, ack1 := read(t, s, 10*time.Second)
	end1 := r1[len(r1)-1].Field(FieldOffset).Int + 1
	ack1(context.Background(), nil) // r1's memory serves the next batch
	r2, ack2 := read(t, s, 10*time.Second)
	first, n2 := r2[0].Field(FieldOffset).Int, len(r2)
	if first != end1 {
		t.Fatalf("second batch starts at %d, want %d", first, end1)
	}
	ack2(context.Background(), context.DeadlineExceeded)
	r3, ack3 := read(t, s, 10*time.Second)
	defer ack3(context.Background(), nil)
	if got := r3[0].Field(FieldOffset).Int; got != first {
		t.Errorf("after the nack: got offset %d, want the nacked batch's %d again", got, first)
	}
	if s.restarts.Get() != 1 || s.nacked.Get() != uint64(n2) {
		t.Errorf("got %d restarts and %d nacked, want 1 and %d", s.restarts.Get(), s.nacked.Get(), n2)
	}
}

// TestOversizeDropped drops records over max_payload, counts them, warns
// once, and commits past them once the records before them are durable.
func TestOversizeDropped(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 1, kfake.SeedTopics(1, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 1)
	prod.produce(10)
	if err := prod.cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(strings.Repeat("x", 4096))}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	prod.produce(10)
	if err := prod.cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(strings.Repeat("y", 4096))}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	prod.produce(10)
	logs := &agenttest.LogBuffer{}
	s := testSource(t, k.Addrs(), func(c *Config) { c.Topics, c.Group, c.MaxPayload = []string{"cmds"}, "oversize", 1024 }, logs)
	recs := readAll(t, s, 30)
	if len(recs) != 30 || s.oversize.Get() != 2 {
		t.Errorf("got %d records and %d dropped, want 30 and 2", len(recs), s.oversize.Get())
	}
	if n := len(logs.Lines("larger than max_payload")); n != 1 {
		t.Errorf("got %d warnings, want 1 for both\n%s", n, logs)
	}
	s.Close(context.Background())
	if got := committed(t, k.Addrs(), "oversize", "cmds", 1)[0]; got != 32 {
		t.Errorf("committed %d, want 32 (the end: past the dropped records)", got)
	}
}

// TestSASLAndTLS reads over TLS with a client certificate, and with SASL
// PLAIN and SCRAM; refused credentials and an unknown CA are setup errors
// (permanent) whose text does not hold the password.
func TestSASLAndTLS(t *testing.T) {
	certs := testbroker.NewCerts(t)
	for _, tc := range []struct {
		name string
		opts []kfake.Opt
		cfg  func(*Config)
		bad  func(*Config)
		prod func() kgo.Opt // how the test's producer gets in
	}{
		{"tls", []kfake.Opt{kfake.TLS(certs.ServerTLS(t))}, func(c *Config) {
			c.TLS = agent.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
		}, func(c *Config) { c.TLS.CAFile = certs.ClientCert }, func() kgo.Opt {
			tc, err := tlsConfig(agent.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey})
			if err != nil {
				t.Fatal(err)
			}
			return kgo.DialTLSConfig(tc)
		}},
		{"plain", []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "gw", "s3cret")}, func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "plain", Username: "gw", Password: "s3cret"}
		}, func(c *Config) { c.SASL.Password = "wrong-pass" }, func() kgo.Opt {
			return kgo.SASL(plain.Auth{User: "gw", Pass: "s3cret"}.AsMechanism())
		}},
		{"scram-sha-512", []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "gw", "s3cret")}, func(c *Config) {
			c.SASL = SASLConfig{Mechanism: "scram-sha-512", Username: "gw", Password: "s3cret"}
		}, func(c *Config) { c.SASL.Password = "wrong-pass" }, func() kgo.Opt {
			return kgo.SASL(scram.Auth{User: "gw", Pass: "s3cret"}.AsSha512Mechanism())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]kfake.Opt{kfake.SeedTopics(1, "cmds"), kfake.NumBrokers(1)}, tc.opts...)
			c, err := kfake.NewCluster(opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			addrs := c.ListenAddrs()
			cfg := func(cf *Config) { cf.Topics = []string{"cmds"}; tc.cfg(cf) }
			s := testSource(t, addrs, cfg, nil)
			pcl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("cmds"), kgo.DisableClientMetrics(), tc.prod())
			if err != nil {
				t.Fatal(err)
			}
			defer pcl.Close()
			if err := pcl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(`{"i":1}`)}).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			if recs := readAll(t, s, 1); string(recs[0].Raw) != `{"i":1}` {
				t.Errorf("got %q", recs[0].Raw)
			}

			if tc.name != "tls" {
				// kfake closes the connection on bad credentials; a real
				// broker answers SASL_AUTHENTICATION_FAILED first.
				c.ControlKey(int16(kmsg.SASLAuthenticate), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					resp := kreq.ResponseKind().(*kmsg.SASLAuthenticateResponse)
					resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
					resp.ErrorMessage = kmsg.StringPtr("Authentication failed: invalid credentials")
					return resp, nil, true
				})
			}
			bc := *Defaults()
			bc.Brokers, bc.DialTimeout, bc.RequestTimeout = addrs, 2*time.Second, 2*time.Second
			cfg(&bc)
			tc.bad(&bc)
			bad, err := New(bc, agent.Env{Pipeline: "t", Component: "kafka", AgentName: "gw1"})
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close(context.Background())
			err = bad.Connect(context.Background())
			if err == nil || !agent.IsPermanent(err) || strings.Contains(err.Error(), "wrong-pass") {
				t.Errorf("got %v, want a permanent error without the password", err)
			}
		})
	}
}

// TestFetchErrorReported refuses the source's fetches with an error
// franz-go does not retry (an ACL revoked on the topic): the source's Read
// returns it, the runner reports it once as the pipeline's last_error and
// retries with backoff; once the fetches are allowed again the records
// flow, nothing lost, and the error is cleared.
func TestFetchErrorReported(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(3, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 8)
	prod.produce(300)
	logs := &agenttest.LogBuffer{}
	p := startPipe(t, "acl", sourceYAML(k.Addrs(), "cmds", ""), t.TempDir(), logs.Logger(slog.LevelInfo))
	agenttest.Eventually(t, 20*time.Second, "the first records", func() bool { return tally(t, p.sink).all(300) }, logs)
	// A fault per partition leader, and the next records produced once
	// each has failed a fetch: no fetch sent before the fault is still
	// waiting at a broker then, to bring them and end the episode at once.
	leaders := map[int32]bool{}
	for part := range int32(3) {
		leaders[k.Cluster().LeaderFor("cmds", part)] = true
	}
	var faults []*kfake.FaultHandle
	for node := range leaders {
		faults = append(faults, k.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Nodes: []int32{node}, Topic: "cmds",
			Err: kerr.TopicAuthorizationFailed, Count: -1}))
	}
	agenttest.Eventually(t, 20*time.Second, "a fetch refused by every leader", func() bool {
		return !slices.ContainsFunc(faults, func(f *kfake.FaultHandle) bool { return f.Hits() == 0 })
	}, logs)
	prod.produce(300)
	agenttest.Eventually(t, 20*time.Second, "the error in last_error", func() bool {
		return strings.Contains(p.p.LastError(), kerr.TopicAuthorizationFailed.Message) && p.p.Status().Sources[0].Errors >= 2
	}, logs)
	for _, f := range faults {
		f.Remove()
	}
	agenttest.Eventually(t, 30*time.Second, "every record", func() bool { return tally(t, p.sink).all(600) }, logs)
	agenttest.Eventually(t, 10*time.Second, "the error cleared", func() bool { return p.p.LastError() == "" }, logs)
	p.stop(t)
	if lost, dups := tally(t, p.sink).lost(600); len(lost) != 0 || dups != 0 {
		t.Errorf("got %d lost and %d duplicates, want 0 and 0", len(lost), dups)
	}
	if n := len(logs.Lines("source read failed")); n != 1 {
		t.Errorf("got %d 'source read failed' warnings, want 1 per episode\n%s", n, logs)
	}
}

// TestInFlightBound reads without acking: once max_in_flight_bytes of
// records are out, Read waits (one episode counted), holding at most the
// budget plus one record; an ack lets it go on.
func TestInFlightBound(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 1, kfake.SeedTopics(1, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 1)
	recs := make([]*kgo.Record, 400)
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte(strings.Repeat("x", 1000))}
	}
	if err := prod.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	const budget = 64 << 10
	s := testSource(t, k.Addrs(), func(c *Config) { c.Topics, c.MaxInFlightBytes, c.BatchSize = []string{"cmds"}, budget, 10 }, nil)
	var acks []agent.AckFunc
	out := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		batch, ack, err := s.Read(ctx)
		cancel()
		if err != nil {
			break // Read waits for room
		}
		out += len(batch)
		acks = append(acks, ack)
	}
	s.mu.Lock()
	held := s.inFlight
	s.mu.Unlock()
	if max := int64(budget + 1000 + recordOverhead); held > max || held < budget {
		t.Errorf("got %d bytes in flight when Read waits, want between the budget %d and %d (one record more)", held, budget, max)
	}
	if s.full.Get() != 1 {
		t.Errorf("got %d full episodes, want 1", s.full.Get())
	}
	acks[0](context.Background(), nil)
	if more, ack := read(t, s, 5*time.Second); len(more) == 0 {
		t.Error("no records after an ack made room")
	} else {
		ack(context.Background(), nil)
	}
	for _, a := range acks[1:] {
		a(context.Background(), nil)
	}
	t.Logf("%d records (%d bytes) held before Read waited", out, held)
}

// TestLagAndStart checks the lag gauge of a partition after a read, and
// start: latest, which skips what was produced before the group existed.
func TestLagAndStart(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 1, kfake.SeedTopics(1, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 1)
	prod.produce(1000)

	m := runner.NewMetrics()
	c := *Defaults()
	c.Brokers, c.Topics, c.Group, c.BatchSize, c.StaticMembership = k.Addrs(), []string{"cmds"}, "lag", 100, false
	s, err := New(c, agent.Env{Pipeline: "t", Component: "kafka", AgentName: "gw1", Metrics: m, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	recs, ack := read(t, s, 10*time.Second)
	last := recs[len(recs)-1].Field(FieldOffset).Int
	ack(context.Background(), nil)
	var b strings.Builder
	m.WritePrometheus(&b)
	want := `pspf_kafka_source_lag{pipeline="t",component="kafka",topic="cmds",partition="0"} ` + strconv.FormatInt(1000-(last+1), 10)
	if !strings.Contains(b.String(), want) {
		t.Errorf("metrics lack %q:\n%s", want, b.String())
	}

	// start: latest begins at the end offset franz-go finds once the
	// partition is assigned: produce until something comes.
	latest := testSource(t, k.Addrs(), func(c *Config) { c.Topics, c.Group, c.Start = []string{"cmds"}, "latest", "latest" }, nil)
	first := int64(-1)
	for deadline := time.Now().Add(20 * time.Second); first < 0; {
		if time.Now().After(deadline) {
			t.Fatal("start: latest read nothing of what was produced after it joined")
		}
		prod.produce(1)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		recs, ack, err := latest.Read(ctx)
		cancel()
		if err == nil {
			first = recs[0].Field(FieldOffset).Int
			ack(context.Background(), nil) // the batch's memory serves the next one
		}
	}
	if o := first; o < 1000 {
		t.Errorf("start: latest read offset %d first, want 1000 or later (produced after it joined)", o)
	}
}
