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
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// BenchmarkIngest measures how fast the agent drains a backlog from
// mosquitto on loopback into the pipeline's durable log (the default disk
// log, group commit every 10ms), acks included, against mosquitto_sub
// draining the same backlog. Both have a persistent session whose backlog of
// b.N messages is published while they are away (queue_qos0_messages is on,
// so QoS 0 queues too): the figure is the receiving side's alone, not the
// publisher's. Each time runs from the start of the receiving process or
// pipeline to the last message (acked, for the agent):
//
//	go test -run '^$' -bench Ingest -benchtime 100000x ./sources/mqtt
//
// It reports both rates, their ratio, and for QoS 1 the peak resident memory
// of the test process while the pipeline drained (sampled every 20ms).
func BenchmarkIngest(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run("qos"+strconv.Itoa(int(qos)), func(b *testing.B) {
			mq := testbroker.Start(b, testbroker.Options{Extra: "queue_qos0_messages true\n"})
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
	// QoS 0 has no acknowledgement: a QoS 1 marker behind the stream says
	// the broker has taken everything before it.
	c.Publish(topic+"/end", 1, false, "end").Wait()
}

func baselineRate(b *testing.B, mq *testbroker.Mosquitto, qos byte, n int, payload string) float64 {
	b.Helper()
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		b.Fatalf("mosquitto_sub not found (apt-get install mosquitto-clients): %v", err)
	}
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(mq.Port), "-t", "bench/base", "-q", strconv.Itoa(int(qos)), "-i", "bench-sub", "-c"}
	// Make the session, then leave.
	if out, err := exec.Command(sub, append(args, "-E")...).CombinedOutput(); err != nil {
		b.Fatalf("mosquitto_sub -E: %v: %s", err, out)
	}
	publishAll(b, publisher(b, mq.URL()), "bench/base", qos, n, payload)
	cmd := exec.Command(sub, append(args, "-C", strconv.Itoa(n))...)
	out, _ := os.Create(os.DevNull)
	defer out.Close()
	cmd.Stdout = out
	start := time.Now()
	if err := cmd.Run(); err != nil {
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
	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["discard"] = agent.Typed[agent.Sink]("discard", func() *struct{} { return &struct{}{} },
		func(*struct{}, agent.Env) (agent.Sink, error) { return discardSink{}, nil })
	text := fmt.Sprintf(`
sources:
  - mqtt:
      brokers: [%q]
      client_id: bench-agent
      subscriptions: [{topic: "bench/agent", qos: %d}]
      status: {topic: "bench/status", retain: false}
sinks:
  - discard: {}
`, mq.URL(), qos)
	spec, err := reg.ParsePipeline("bench.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	run := func(m *runner.Metrics, until func() bool) time.Duration {
		p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: filepath.Join(dir, "data"),
			OpenLog: runner.OpenDiskLog(nilLogger()), ShutdownTimeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		runErr := make(chan error, 1)
		start := time.Now()
		go func() { runErr <- p.Run(ctx) }()
		if !wait.Until(2*time.Minute, until) {
			b.Fatalf("pipeline did not finish")
		}
		elapsed := time.Since(start)
		cancel()
		if err := <-runErr; err != nil {
			b.Fatal(err)
		}
		return elapsed
	}
	// Make the session (the birth message follows the SUBACK), then leave.
	pub := publisher(b, mq.URL())
	var online atomic.Bool
	pub.Subscribe("bench/status", 1, func(_ paho.Client, msg paho.Message) { online.Store(string(msg.Payload()) == "online") }).Wait()
	run(runner.NewMetrics(), online.Load)
	publishAll(b, pub, "bench/agent", qos, n, payload)

	m := runner.NewMetrics()
	acked := m.Counter("pspf_mqtt_acked_total", "pipeline", "bench", "component", "mqtt")
	var peak atomic.Int64
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			peak.Store(max(peak.Load(), rssBytes()))
			select {
			case <-stopRSS:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	elapsed := run(m, func() bool { return acked.Get() >= uint64(n) })
	close(stopRSS)
	<-rssDone
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
