package kafka

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/state"
)

// BenchmarkChangelogRestore measures a restore from a changelog partition
// holding 100k keys (values of 64 bytes, keys of about 40 bytes, as a
// window's per-device entries): the changelog read to its end and every
// record applied to a bbolt table, then the checkpoint that makes the
// cache durable. The broker (kfake) runs as a process of its own:
//
//	go test -run '^$' -bench ChangelogRestore -benchtime 3x ./sources/kafka
func BenchmarkChangelogRestore(b *testing.B) {
	const keys = 100_000
	addr := startBroker(b)
	ctx := context.Background()
	admin, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DisableClientMetrics())
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	if err := createTopic(ctx, admin, "in", 1); err != nil {
		b.Fatal(err)
	}
	cfg := Defaults()
	cfg.Brokers, cfg.Topics, cfg.Group = []string{addr}, []string{"in"}, "bench"
	src, err := New(*cfg, agent.Env{})
	if err != nil {
		b.Fatal(err)
	}
	cl, err := src.Changelog("bench-state")
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	val := make([]byte, 1+64)
	val[0] = 1
	recs := make([]agent.ChangelogRecord, 0, 5000)
	for i := 0; i < keys; i += cap(recs) {
		recs = recs[:0]
		for j := i; j < i+cap(recs) && j < keys; j++ {
			recs = append(recs, agent.ChangelogRecord{Key: []byte("op.window.0123456789abcdef.p.in.0\x00k" + strconv.Itoa(j)), Value: val})
		}
		if _, err := cl.Append(ctx, 0, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		db, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{})
		if err != nil {
			b.Fatal(err)
		}
		t, err := db.Table("op.window.0123456789abcdef.p.in.0", 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n := 0
		next, err := cl.Read(ctx, 0, 0, func(key, value []byte) error {
			n++
			return t.Put(key[34:], value[1:])
		}, nil)
		if err != nil || n != keys || next < keys {
			b.Fatalf("read %d records to %d: %v", n, next, err)
		}
		if _, err := db.Checkpoint(nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/100k-keys")
}

// benchRun makes the benchmark's topics unique across its runs.
var benchRun int

// BenchmarkGroupWindow measures the window pipeline with the kafka store
// draining a backlog of 120k readings (6 partitions, 60 devices, one
// reading per device every 5s of event time) with 1 and with 2 agents in
// one group, in this process, against a kfake broker in a process of its
// own; it reports the readings per second from the start of the agents to
// the last window output (the group's join included), and how long the
// group took until every partition was owned:
//
//	go test -run '^$' -bench GroupWindow -benchtime 1x ./sources/kafka
func BenchmarkGroupWindow(b *testing.B) {
	addr := startBroker(b)
	for _, agents := range []int{1, 2} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) {
			for i := range b.N {
				benchRun++
				topic := fmt.Sprintf("tele-%d-%d-%d", agents, i, benchRun)
				admin, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DisableClientMetrics())
				if err != nil {
					b.Fatal(err)
				}
				if err := createTopic(context.Background(), admin, topic, 6); err != nil {
					b.Fatal(err)
				}
				admin.Close()
				prod := newTelemetry(b, []string{addr}, topic, 60, 6)
				for range 20 {
					prod.produce(100)
				}
				records := 60 * prod.round
				want := prod.close()
				src := sourceYAML([]string{addr}, topic, ", group: "+topic+", static_membership: false, batch_size: 2000, max_in_flight_bytes: 4MiB")
				state := "state: {store: kafka, changelog: " + topic + "-state}\ncheckpoint: {interval: 5s}\n"
				start := time.Now()
				var ps []*pipe
				for a := range agents {
					ps = append(ps, windowPipe(b, "rollup", src, state, b.TempDir(), nil))
					_ = a
				}
				deadline := time.Now().Add(5 * time.Minute)
				var joined time.Duration
				for {
					if joined == 0 {
						owned := 0
						for _, p := range ps {
							if st := p.p.Status().Partitions; st != nil {
								owned += len(st.Owned)
							}
						}
						if owned == 6 {
							joined = time.Since(start)
						}
					}
					var recs [][]agent.Record
					for _, p := range ps {
						recs = append(recs, p.sink.Records())
					}
					if windowsOf(b, recs...).complete(want) {
						break
					}
					if time.Now().After(deadline) {
						b.Fatal("windows not complete within 5 minutes")
					}
					<-time.After(20 * time.Millisecond)
				}
				el := time.Since(start)
				b.ReportMetric(float64(records)/el.Seconds(), "readings/s")
				b.ReportMetric(joined.Seconds(), "join-s")
				for _, p := range ps {
					p.stop(b)
				}
			}
		})
	}
}
