package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	waitfor "github.com/pspf/pspf-edge/internal/wait" // the package has a wait of its own
	"github.com/pspf/pspf-edge/sources/simulate"
)

func TestREADMESample(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["mqtt"] = Factory()
	os.Setenv("MQTT_PASSWORD", "pw")
	specs := agenttest.CheckREADMESamples(t, "README.md", reg)
	if len(specs) == 1 {
		if c := specs[0].Sinks[0].Config.(*Config); c.Password != "pw" || c.QoS != 1 {
			t.Errorf("got %+v, want the sample's values", c)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["mqtt"] = Factory()
	for _, tc := range []struct{ body, want string }{
		{"{topic: t}", "broker: must be a URL"},
		{"{broker: 'http://x:1', topic: t}", "scheme must be"},
		{"{broker: 'tcp://x:1', topic: t, qos: 2}", `qos: must be 0 or 1, got "2"`},
		{"{broker: 'tcp://x:1', topic: 'a/{b'}", "topic: template"},
		{"{broker: 'tcp://x:1', topic: 'a/#'}", `topic: a wildcard (+ or #) in a topic name, got "a/#"`},
		{"{broker: 'tcp://x:1', topic: t, unreachable_after: 10ms}", "unreachable_after: must be between 100ms and write_timeout (30s)"},
		{"{broker: 'tcp://x:1', topic: t, write_timeout: 5s, unreachable_after: 6s}", "unreachable_after: must be between 100ms and write_timeout (5s)"},
	} {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{simulate: {}}]\nsinks: [{mqtt: "+tc.body+"}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// subscriber collects messages on filter, by _id.
type subscriber struct {
	mu   sync.Mutex
	ids  map[string]int
	msgs []paho.Message
}

func subscribe(t *testing.T, broker, filter string, tc *agent.TLSConfig) *subscriber {
	t.Helper()
	s := &subscriber{ids: map[string]int{}}
	// A persistent session on a persistent broker: messages published while
	// the subscriber reconnects after a broker restart are queued for it.
	o := paho.NewClientOptions().AddBroker(broker).SetClientID("sub-" + strconv.FormatInt(time.Now().UnixNano(), 36)).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(100 * time.Millisecond)
	if tc != nil {
		c, err := tc.Build()
		if err != nil {
			t.Fatal(err)
		}
		o.SetTLSConfig(c)
	}
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		var v map[string]any
		_ = json.Unmarshal(m.Payload(), &v)
		id, _ := v["_id"].(string)
		s.mu.Lock()
		s.ids[id]++
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return s
}

// wait waits up to d for n distinct records and returns how many came.
func (s *subscriber) wait(t *testing.T, n int, d time.Duration) int {
	t.Helper()
	waitfor.Until(d, func() bool { return s.distinct() >= n })
	return s.distinct()
}

func (s *subscriber) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func records(from, n int) []agent.Record {
	out := make([]agent.Record, n)
	for j := range out {
		i := from + j
		out[j] = agent.Record{ID: "p:" + strconv.Itoa(i), Seq: uint64(i), Key: "k", Fields: []agent.Field{agent.Int("i", int64(i)), agent.String("site", "s"+strconv.Itoa(i%2))}}
	}
	return out
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg, agent.Env{AgentName: "gw1", Pipeline: "p", Component: "mqtt"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestPublishQoS(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	for _, tc := range []struct {
		v   string
		qos int
	}{{"3.1.1", 0}, {"3.1.1", 1}, {"5", 0}, {"5", 1}, {"auto", 1}} {
		qos := tc.qos
		t.Run("v"+tc.v+"/qos"+strconv.Itoa(qos), func(t *testing.T) {
			prefix := "q" + strconv.Itoa(qos) + "v" + tc.v
			sub := subscribe(t, m.URL(), prefix+"/#", nil)
			cfg := *Defaults()
			cfg.Broker, cfg.Topic, cfg.QoS, cfg.ProtocolVersion = m.URL(), prefix+"/{site}/t", qos, tc.v
			s := newSink(t, cfg)
			recs := records(1, 200)
			recs[7].Fields = recs[7].Fields[:1] // no site: refused
			err := s.Write(context.Background(), recs)
			var rej *agent.RejectedError
			if !errors.As(err, &rej) || len(rej.Index) != 1 || rej.Index[0] != 7 {
				t.Fatalf("got %v, want record 7 rejected", err)
			}
			if got := sub.wait(t, 199, 10*time.Second); got != 199 {
				t.Fatalf("got %d messages, want 199", got)
			}
			// mosquitto speaks MQTT 5: auto chooses it.
			if want := map[string]int32{"3.1.1": 4, "5": 5, "auto": 5}[tc.v]; s.version.Load() != want {
				t.Errorf("pspf_mqtt_protocol_version %d, want %d", s.version.Load(), want)
			}
			sub.mu.Lock()
			defer sub.mu.Unlock()
			for _, msg := range sub.msgs {
				var v map[string]any
				json.Unmarshal(msg.Payload(), &v)
				if want := prefix + "/" + v["site"].(string) + "/t"; msg.Topic() != want {
					t.Errorf("got topic %s, want %s", msg.Topic(), want)
				}
			}
		})
	}
}

func TestTLSClientCertificate(t *testing.T) {
	certs := testbroker.NewCerts(t)
	m := testbroker.Start(t, testbroker.Options{TLS: &testbroker.TLS{CAFile: certs.CAFile, CertFile: certs.ServerCert, KeyFile: certs.ServerKey, RequireClientCert: true}})
	tc := agent.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	sub := subscribe(t, m.TLSURL(), "tls/#", &tc)
	cfg := *Defaults()
	cfg.Broker, cfg.Topic, cfg.TLS = m.TLSURL(), "tls/x", tc
	s := newSink(t, cfg)
	if err := s.Write(context.Background(), records(1, 20)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if got := sub.wait(t, 20, 5*time.Second); got != 20 {
		t.Errorf("got %d, want 20", got)
	}
	// Without the client certificate the broker refuses.
	bad := cfg
	bad.TLS.CertFile, bad.TLS.KeyFile = "", ""
	bad.ConnectTimeout = 2 * time.Second
	b, _ := New(bad, agent.Env{AgentName: "gw1", Pipeline: "p", Component: "bad"})
	if err := b.Connect(context.Background()); err == nil {
		b.Close(context.Background())
		t.Errorf("connect without a client certificate: got nil, want an error")
	}
}

// TestBrokerOutage stops mosquitto under a steady stream through a full
// pipeline on the disk log, and starts it again: every record arrives.
func TestBrokerOutage(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	sub := subscribe(t, m.URL(), "out/#", nil)
	const total = 2000
	batches := make([][]agent.Record, total/20)
	for b := range batches {
		batches[b] = make([]agent.Record, 20)
		for i := range batches[b] {
			batches[b][i] = agent.Record{Key: "k", Fields: []agent.Field{agent.Int("i", int64(b*20+i))}}
		}
	}
	src := &pacedSource{ScriptSource: agenttest.NewScriptSource(batches...), every: 2 * time.Millisecond}
	reg := runner.NewRegistry()
	reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["mqtt"] = Factory()
	yaml := "sources: [{script: {}}]\nsinks:\n  - mqtt: {broker: '" + m.URL() + "', topic: out/t, write_timeout: 2s, connect_timeout: 1s}\n    retry: {initial: 20ms, max: 200ms}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), AgentName: "gw1", OpenLog: runner.OpenDiskLog(testLogger()), ShutdownTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// Under the stream: once records arrive.
		waitfor.Until(10*time.Second, func() bool { return sub.distinct() >= 100 })
		m.Stop()
		time.Sleep(time.Second) // the outage this test injects, not a wait
		m.Restart()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := sub.wait(t, total, 10*time.Second); got != total {
		t.Errorf("got %d distinct records, want %d", got, total)
	}
}

// pacedSource slows a ScriptSource down to one batch per every.
type pacedSource struct {
	*agenttest.ScriptSource
	every time.Duration
}

func (p *pacedSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	agent.Sleep(ctx, p.every)
	return p.ScriptSource.Read(ctx)
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestUsernamePassword(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pw, "gw", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	os.Chmod(pw, 0o600)
	m := testbroker.Start(t, testbroker.Options{Extra: "allow_anonymous false\npassword_file " + pw + "\n"})
	cfg := *Defaults()
	cfg.Broker, cfg.Topic, cfg.Username, cfg.Password, cfg.ConnectTimeout = m.URL(), "auth/t", "gw", "s3cret", 2*time.Second
	s := newSink(t, cfg)
	if err := s.Write(context.Background(), records(1, 3)); err != nil {
		t.Fatalf("write: %v", err)
	}
	// A refusal is a setup error (a reload to it is rolled back); the
	// broker being away is an outage.
	wrong := cfg
	wrong.Password = "wrong"
	b, _ := New(wrong, agent.Env{AgentName: "gw1", Pipeline: "p", Component: "bad"})
	if err := b.Connect(context.Background()); err == nil || !agent.IsPermanent(err) {
		b.Close(context.Background())
		t.Errorf("connect with a wrong password: got %v, want a permanent error", err)
	}
	m.Stop()
	d, _ := New(cfg, agent.Env{AgentName: "gw1", Pipeline: "p", Component: "down"})
	if err := d.Connect(context.Background()); err == nil || agent.IsPermanent(err) {
		d.Close(context.Background())
		t.Errorf("connect to a stopped broker: got %v, want a retryable error", err)
	}
}
