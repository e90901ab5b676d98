package fleet

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/testkit"
	mqttsink "github.com/pspf/pspf-edge/sinks/mqtt"
)

// beats collects the heartbeats published under pspf/fleet/heartbeats/.
type beats struct {
	mu  sync.Mutex
	got []Heartbeat
	raw []string
}

func subscribeBeats(t *testing.T, broker string) *beats {
	b := &beats{}
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("hb-test"))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	tok := cl.Subscribe("pspf/fleet/heartbeats/+", 1, func(_ paho.Client, m paho.Message) {
		var hb Heartbeat
		if err := json.Unmarshal(m.Payload(), &hb); err != nil {
			t.Errorf("heartbeat %q: %v", m.Payload(), err)
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.got = append(b.got, hb)
		b.raw = append(b.raw, string(m.Payload()))
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return b
}

func (b *beats) last() (Heartbeat, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.got) == 0 {
		return Heartbeat{}, 0
	}
	return b.got[len(b.got)-1], len(b.got)
}

// Heartbeats go through an MQTT sink: one at the start, one at once on a
// change (a new bundle), and none carries a secret.
func TestHeartbeats(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	b := subscribeBeats(t, m.URL())
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	reg := testRegistry()
	reg.Sinks["mqtt"] = mqttsink.Factory()
	const password = "hb-s3cret-pw"
	t.Setenv("HB_PASSWORD", password)
	root := agent.ParseConfig("agent.yaml", []byte("sink:\n  mqtt:\n    broker: "+m.URL()+"\n    topic: pspf/fleet/heartbeats/{_key}\n    retain: true\n    encoding: raw\n    username: gw\n    password: ${HB_PASSWORD}\n"), func(k string) (string, bool) {
		if k == "HB_PASSWORD" {
			return password, true
		}
		return "", false
	}, nil)
	spec, err := reg.ParseSink(root.Field("sink"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := runner.DefaultAgentConfig()
	cfg.DataDir, cfg.PipelinesDir, cfg.ReloadDebounce = t.TempDir(), e.dir, 20*time.Millisecond
	sup := supervisor.New(supervisor.Deps{Config: cfg, Registry: reg, Metrics: e.metrics, Logger: e.log.Logger(slog.LevelInfo), Poll: 50 * time.Millisecond})
	secrets := new(agent.Secrets)
	secrets.Add(agent.SecretValues(spec.Config)...)
	hb := NewHeartbeats(HeartbeatDeps{Config: HeartbeatConfig{Interval: time.Hour}, Sink: spec, Registry: reg, Name: "gw-7",
		Labels: map[string]string{"site": "p3"}, Version: "v9", DataDir: cfg.DataDir, Views: sup.Views, Applier: e.a,
		Logger: e.log.Logger(slog.LevelInfo), Metrics: e.metrics, Secrets: secrets, CheckEvery: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sup.Run(ctx, nil) })
	wg.Go(func() { hb.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	testkit.Eventually(t, 20*time.Second, "the first heartbeat", func() bool { _, n := b.last(); return n > 0 }, e.log)
	first, _ := b.last()
	if first.Agent != "gw-7" || first.AgentVersion != "v9" || first.Labels["site"] != "p3" || first.Status.Version != 0 {
		t.Errorf("first heartbeat: got %+v", first)
	}
	// A bundle is a change: a heartbeat comes at once, not in an hour.
	if _, err := e.a.Apply(sign(t, sk, 4, File{"a.yaml", pipe("a4")})); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "a heartbeat with bundle 4 and pipeline a running", func() bool {
		l, _ := b.last()
		return l.Status.Version == 4 && len(l.Pipelines) == 1 && l.Pipelines[0].State == supervisor.StateRunning
	}, e.log)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, raw := range b.raw {
		if strings.Contains(raw, password) {
			t.Errorf("a heartbeat holds the password: %s", raw)
		}
	}
	if strings.Contains(e.log.String(), password) {
		t.Errorf("the log holds the password:\n%s", e.log)
	}
	t.Logf("heartbeat: %d bytes: %s", len(b.raw[len(b.raw)-1]), b.raw[len(b.raw)-1])
}

// BenchmarkHeartbeat reports a heartbeat's size for an agent with three
// pipelines (one offline with a backlog and drops), and what it costs per
// day at the default interval (payload only, without a change).
func BenchmarkHeartbeat(b *testing.B) {
	views := func() []supervisor.PipelineView {
		return []supervisor.PipelineView{
			{Name: "boiler-telemetry", State: "running"},
			{Name: "alarms", State: "running", BacklogRecords: 1200, BacklogBytes: 96000, OldestUnsentSeconds: 340,
				Drops: map[string]uint64{"overflow_oldest": 12}, Sinks: []supervisor.SinkView{{OfflineSeconds: 340}},
				LastError: "sink \"uplink\": dial tcp 10.0.0.7:9092: connect: connection refused"},
			{Name: "commands", State: "running"},
		}
	}
	h := NewHeartbeats(HeartbeatDeps{Name: "gw-0042", Labels: map[string]string{"site": "plant-3", "role": "boiler"}, Version: "v1.4.2", Views: views})
	var n int
	for i := 0; b.Loop(); i++ {
		raw, err := json.Marshal(h.Make(uint64(i)))
		if err != nil {
			b.Fatal(err)
		}
		n = len(raw)
	}
	b.ReportMetric(float64(n), "bytes/heartbeat")
	b.ReportMetric(float64(n)*float64(24*time.Hour/DefaultHeartbeatInterval), "bytes/agent/day")
}

// TestHeartbeatPipelineNameIsReserved: no pipeline file can be named like
// the heartbeat's pipeline (a pipeline's name is its file's base name, which
// has no '/'), so their metrics never share labels.
func TestHeartbeatPipelineNameIsReserved(t *testing.T) {
	if !strings.Contains(HeartbeatPipeline, "/") {
		t.Fatalf("HeartbeatPipeline %q: a pipeline file could take this name", HeartbeatPipeline)
	}
	reg := runner.NewRegistry()
	none := func() *struct{} { return &struct{}{} }
	reg.Sources["src"] = agent.Typed[agent.Source]("test", none, func(*struct{}, agent.Env) (agent.Source, error) { return nil, nil })
	reg.Sinks["out"] = agent.Typed[agent.Sink]("test", none, func(*struct{}, agent.Env) (agent.Sink, error) { return nil, nil })
	spec, err := reg.ParsePipeline("/etc/pspf-edge/pipelines/"+HeartbeatPipeline+".yaml", []byte("sources: [{src: {}}]\nsinks: [{out: {}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name == HeartbeatPipeline {
		t.Fatalf("a pipeline file at .../%s.yaml is named %q", HeartbeatPipeline, spec.Name)
	}
}
