package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkExactlyOnce measures what delivery: exactly_once costs against
// at_least_once, one agent, the window pipeline with the kafka store and
// its outputs to a Kafka topic read back with read_committed, against a
// kfake broker in a process of its own, checkpoints every second:
//
//   - readings/s: draining a backlog of 60k readings (6 partitions, 60
//     devices) until every window output is read committed;
//
//   - close-ms: then, streaming, the time from a round of readings that
//     closes a minute's 60 windows to the last of them read committed,
//     averaged over 10 rounds: exactly_once shows its outputs at the
//     checkpoint that follows (on average half an interval later, plus the
//     transaction).
//
//     go test -run '^$' -bench ExactlyOnce -benchtime 1x -count 3 ./sources/kafka
func BenchmarkExactlyOnce(b *testing.B) {
	addr := startBroker(b)
	for _, delivery := range []string{"at_least_once", "exactly_once"} {
		b.Run(delivery, func(b *testing.B) {
			for i := range b.N {
				benchRun++
				topic := fmt.Sprintf("tele-%s-%d-%d", delivery, i, benchRun)
				admin, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DisableClientMetrics())
				if err != nil {
					b.Fatal(err)
				}
				for _, t := range []string{topic, topic + "-out"} {
					if err := createTopic(context.Background(), admin, t, 6); err != nil {
						b.Fatal(err)
					}
				}
				admin.Close()
				prod := newTelemetry(b, []string{addr}, topic, 60, 6)
				for range 10 {
					prod.produce(100)
				}
				records := 60 * prod.round
				out := readCommitted(b, []string{addr}, topic+"-out")
				src := sourceYAML([]string{addr}, topic, ", group: "+topic+", static_membership: false, batch_size: 2000, max_in_flight_bytes: 4MiB")
				sink := "name: out\n    kafka: {brokers: [" + addr + "], topic: " + topic + "-out, delivery: " + delivery + ", linger: 1ms}"
				state := "state: {store: kafka, changelog: " + topic + "-state}\ncheckpoint: {interval: 1s}\n"
				start := time.Now()
				p := windowPipeTo(b, "rollup", src, sink, state, b.TempDir(), nil)
				wait := func(what string) {
					closed := prod.closed()
					deadline := time.Now().Add(5 * time.Minute)
					for !out.windows().complete(closed) {
						if time.Now().After(deadline) {
							b.Fatalf("%s: windows not complete within 5 minutes", what)
						}
					}
				}
				wait("backlog")
				b.ReportMetric(float64(records)/time.Since(start).Seconds(), "readings/s")
				var total time.Duration
				const rounds = 10
				for range rounds {
					prod.produce(12) // one minute of event time: closes the minute before
					t0 := time.Now()
					wait("streaming")
					total += time.Since(t0)
				}
				b.ReportMetric(float64(total.Milliseconds())/rounds, "close-ms")
				p.stop(b)
			}
		})
	}
}
