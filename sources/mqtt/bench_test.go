package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// BenchmarkIngest measures MQTT ingest from mosquitto on loopback into the
// pipeline's durable log (the default disk log, group commit every 10ms),
// acks included, against mosquitto_sub alone receiving the same stream from
// the same publisher. b.N is the number of messages:
//
//	go test -run '^$' -bench Ingest -benchtime 50000x ./sources/mqtt
//
// It reports both rates, their ratio, and for QoS 1 the agent's peak
// resident memory while it ran (the whole test process, sampled).
func BenchmarkIngest(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run("qos"+strconv.Itoa(int(qos)), func(b *testing.B) {
			mq := testbroker.Start(b, testbroker.Options{})
			n := b.N
			payload := strings.Repeat("x", 64)
			base := baselineRate(b, mq, qos, n, payload)
			b.ResetTimer()
			rate, rss := pipelineRate(b, mq, qos, n, payload)
			b.StopTimer()
			b.ReportMetric(base, "sub_msgs/s")
			b.ReportMetric(rate, "agent_msgs/s")
			b.ReportMetric(rate/base, "ratio")
			if qos == 1 {
				b.ReportMetric(float64(rss)/(1<<20), "peak_rss_MiB")
			}
		})
	}
}

// publishAll publishes n messages as fast as the client takes them and
// waits until the broker has them (QoS 1) or they are written (QoS 0).
func publishAll(b *testing.B, c paho.Client, topic string, qos byte, n int, payload string) {
	toks := make(chan paho.Token, 4096)
	done := make(chan struct{})
	go func() {
		for tok := range toks {
			tok.Wait()
		}
		close(done)
	}()
	for i := range n {
		toks <- c.Publish(topic, qos, false, strconv.Itoa(i)+" "+payload)
	}
	close(toks)
	<-done
}

func baselineRate(b *testing.B, mq *testbroker.Mosquitto, qos byte, n int, payload string) float64 {
	b.Helper()
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		b.Fatalf("mosquitto_sub not found (apt-get install mosquitto-clients): %v", err)
	}
	cmd := exec.Command(sub, "-h", "127.0.0.1", "-p", strconv.Itoa(mq.Port), "-t", "bench/base", "-q", strconv.Itoa(int(qos)),
		"-C", strconv.Itoa(n), "-i", "bench-sub", "-c")
	out, _ := os.Create(os.DevNull)
	defer out.Close()
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // mosquitto_sub has subscribed
	pub := publisher(b, mq.URL())
	start := time.Now()
	publishAll(b, pub, "bench/base", qos, n, payload)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("mosquitto_sub: %v", err)
	}
	return float64(n) / time.Since(start).Seconds()
}

type discardSink struct{}

func (discardSink) Connect(context.Context) error               { return nil }
func (discardSink) Write(context.Context, []agent.Record) error { return nil }
func (discardSink) Close(context.Context) error                 { return nil }

func pipelineRate(b *testing.B, mq *testbroker.Mosquitto, qos byte, n int, payload string) (rate float64, peakRSS int64) {
	b.Helper()
	reg := agent.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["discard"] = agent.Typed[agent.Sink]("discard", func() *struct{} { return &struct{}{} },
		func(*struct{}, agent.Env) (agent.Sink, error) { return discardSink{}, nil })
	text := fmt.Sprintf(`
sources:
  - mqtt:
      brokers: [%q]
      client_id: bench-agent
      subscriptions: [{topic: "bench/agent", qos: %d}]
      clean_session: %t
      status: {topic: "bench/status"}
sinks:
  - discard: {}
`, mq.URL(), qos, qos == 0)
	spec, err := reg.ParsePipeline("bench.yaml", []byte(text), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
	if err != nil {
		b.Fatal(err)
	}
	m := agent.NewMetrics()
	dir := b.TempDir()
	p, err := agent.NewPipeline(spec, agent.PipelineDeps{Registry: reg, Metrics: m, DataDir: filepath.Join(dir, "data"),
		OpenLog: agent.OpenDiskLog(nilLogger()), ShutdownTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	pub := publisher(b, mq.URL())
	online := make(chan struct{}, 1)
	pub.Subscribe("bench/status", 1, func(_ paho.Client, msg paho.Message) {
		if string(msg.Payload()) == "online" {
			select {
			case online <- struct{}{}:
			default:
			}
		}
	}).Wait()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	<-online
	acked := m.Counter("pspf_mqtt_acked_total", "pipeline", "bench", "component", "mqtt")
	var peak atomic.Int64
	stopRSS := make(chan struct{})
	go func() {
		for {
			peak.Store(max(peak.Load(), rssBytes()))
			select {
			case <-stopRSS:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	publishAll(b, pub, "bench/agent", qos, n, payload)
	for acked.Get() < uint64(n) {
		time.Sleep(time.Millisecond)
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("only %d of %d messages acked", acked.Get(), n)
		}
	}
	elapsed := time.Since(start)
	close(stopRSS)
	cancel()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
	return float64(n) / elapsed.Seconds(), peak.Load()
}

// rssBytes returns this process's resident set size from /proc.
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func nilLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
