package kafka

import (
	"context"
	"log/slog"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// BenchmarkWriteLZ4 writes batches of 500 records of 200 bytes with lz4 and
// acks: all to an in-process cluster: one that acknowledges without storing
// (blackhole: BlackholeProduce, so that the broker's own copying is not
// measured) and one that stores (stored); and, to the first, batches of
// one record (single: what every Write is at low rates, where the per-Write
// cost is all there is).
//
//	go test -run '^$' -bench WriteLZ4 -cpu 1 ./sinks/kafka
func BenchmarkWriteLZ4(b *testing.B) {
	for _, mode := range []string{"blackhole", "stored", "single"} {
		b.Run(mode, func(b *testing.B) {
			opts := []kfake.Opt{kfake.SeedTopics(4, "bench")}
			if mode != "stored" {
				opts = append(opts, kfake.BlackholeProduce())
			}
			k := testbroker.StartKafka(b, opts...)
			cfg := testConfig(k.Addr(), "bench")
			cfg.Encoding = "raw"
			cfg.Compression = "lz4"
			s := connect(b, cfg)
			payload := make([]byte, 200)
			for i := range payload {
				payload[i] = byte('a' + i%26)
			}
			recs := make([]agent.Record, 500)
			if mode == "single" {
				recs = recs[:1]
			}
			for i := range recs {
				recs[i] = agent.Record{ID: "p:" + string(rune('0'+i%10)), Key: "k" + string(rune('0'+i%8)), Source: "sim", Raw: payload}
			}
			ctx := context.Background()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; done += len(recs) {
				if err := s.Write(ctx, recs[:min(len(recs), b.N-done)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkDrainAfterOutage fills a disk log with a backlog of 200-byte
// records (what an outage leaves behind) and measures how fast a pipeline
// drains it into Kafka (lz4, acks: all, no rate limit), in MB/s of log
// payload.
//
//	go test -run '^$' -bench DrainAfterOutage -benchtime 1x ./sinks/kafka
func BenchmarkDrainAfterOutage(b *testing.B) {
	const total = 150_000
	for range b.N {
		b.StopTimer() // only the drain is timed, not filling the log
		k := testbroker.StartKafka(b, kfake.SeedTopics(4, "drain"), kfake.BlackholeProduce())
		dir := b.TempDir()
		bytes := fillRaw(b, filepath.Join(dir, "log"), total, 200)
		reg := runner.NewRegistry()
		src := agenttest.NewScriptSource()
		reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
		var ts *timedSink
		f := Factory()
		reg.Sinks["kafka"] = agent.Factory[agent.Sink]{Config: f.Config, New: func(c any, env agent.Env) (agent.Sink, error) {
			s, err := f.New(c, env)
			ts = &timedSink{Sink: s.(*Sink)}
			return ts, err
		}}
		text := "sources: [{script: {}}]\nsinks:\n  - kafka: {brokers: [" + k.Addr() + "], topic: drain, encoding: raw, linger: 2ms}\n    batch: {max_records: 5000, max_bytes: 2MiB}\n"
		spec, err := reg.ParsePipeline("p.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err != nil {
			b.Fatal(err)
		}
		logger := slog.New(slog.DiscardHandler)
		m := runner.NewMetrics()
		p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: dir, AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 5 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		stop := make(chan struct{})
		peak := make(chan uint64)
		go func() { // sample the heap while draining
			top := base
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					peak <- top
					return
				case <-t.C:
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					top = max(top, ms.HeapInuse)
				}
			}
		}()
		b.StartTimer()
		start := time.Now()
		if err := p.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		close(stop)
		b.ReportMetric(float64(<-peak-base)/1e6, "heap-growth-MB")
		b.ReportMetric(float64(bytes)/1e6, "backlog-MB")
		b.Logf("writes %d, in write %v of %v", ts.writes, ts.in, el)
		b.ReportMetric(float64(bytes)/el.Seconds()/1e6, "MB/s")
		b.ReportMetric(float64(total)/el.Seconds(), "records/s")
		k.Stop()
	}
}

// fillRaw appends n records with a raw payload of size bytes and returns
// the log payload bytes.
func fillRaw(b *testing.B, dir string, n, size int) int {
	l, err := runner.OpenDiskLog(slog.New(slog.DiscardHandler))(dir, runner.DefaultBufferConfig())
	if err != nil {
		b.Fatal(err)
	}
	raw := make([]byte, size)
	for i := range raw {
		raw[i] = byte('a' + i%26)
	}
	total := 0
	batch := make([][]byte, 0, 1000)
	for i := 0; i < n; i++ {
		r := agent.Record{Key: "k" + string(rune('0'+i%8)), Raw: raw}
		p, _ := r.MarshalMsg(nil)
		total += len(p)
		batch = append(batch, p)
		if len(batch) == cap(batch) || i == n-1 {
			last, err := l.Append(context.Background(), batch)
			if err == nil {
				err = l.Sync(context.Background(), last)
			}
			if err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	return total
}

// timedSink measures the time spent in Write.
type timedSink struct {
	*Sink
	writes int
	in     time.Duration
}

func (t *timedSink) Write(ctx context.Context, r []agent.Record) error {
	s := time.Now()
	err := t.Sink.Write(ctx, r)
	t.in += time.Since(s)
	t.writes++
	return err
}
