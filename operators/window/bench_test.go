package window

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/state"
)

func meanConfig() *Config {
	c := DefaultConfig()
	c.Size = time.Second
	c.Aggregates = []AggConfig{{Fn: "mean", Field: "temp"}}
	return c
}

// BenchmarkTumblingMean is a per-key 1 s tumbling mean over decoded records:
// 1000 keys, 10 readings per key and second, batches of 512. Run on one core:
//
//	go test -run '^$' -bench TumblingMean -benchmem -cpu 1 ./operators/window/
func BenchmarkTumblingMean(b *testing.B) {
	const keys, batch = 1000, 512
	w, err := New(meanConfig(), agenttest.Env())
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("sensor-%d", i)
	}
	in := make([]agent.Record, batch)
	for i := range in {
		in[i].Fields = []agent.Field{agent.Float("temp", 20)}
	}
	bt := &agent.Batch{Records: make([]agent.Record, 0, batch)}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	step := int64(time.Second) / (10 * keys) // 10 readings per key and second
	n := 0
	ctx := context.Background()
	defer lockThread()()
	cpu0, cpuOK := threadCPU()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		bt.Records = bt.Records[:batch]
		for i := range bt.Records {
			r := &bt.Records[i]
			r.Key = names[n%keys]
			r.EventTime = base + int64(n)*step
			r.Fields = in[i].Fields
			in[i].Fields[0].Float = float64(n % 7)
			n++
		}
		if err := w.Process(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	if cpu1, ok := threadCPU(); ok && cpuOK && cpu1 > cpu0 {
		b.ReportMetric(float64(n)/(cpu1-cpu0).Seconds(), "records/cpu-s")
	}
	b.ReportMetric(float64(b.Elapsed())/float64(n), "ns/record")
}

// BenchmarkCheckpoint measures a checkpoint of a window operator over a real
// state file: Snapshot (the changed keys written to the table) and the bbolt
// commit, for 100k keys of which `changed` changed since the last one.
//
//	go test -run '^$' -bench Checkpoint -benchmem ./operators/window/
func BenchmarkCheckpoint(b *testing.B) {
	for _, changed := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("changed=%d", changed), func(b *testing.B) {
			const keys = 100_000
			db, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{CacheBytes: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			env := agenttest.Env()
			env.State = func(ttl time.Duration) (agent.StateTable, error) { return db.Table("op.window", ttl) }
			c := meanConfig()
			c.Size = time.Hour // keep every window open
			c.MemoryBytes = 1 << 30
			w, err := New(c, env)
			if err != nil {
				b.Fatal(err)
			}
			names := make([]string, keys)
			for i := range names {
				names[i] = fmt.Sprintf("sensor-%06d", i)
			}
			base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
			ctx := context.Background()
			feed := func(from, n int) {
				bt := &agent.Batch{}
				for i := range n {
					k := (from + i) % keys
					bt.Records = append(bt.Records, agent.Record{Key: names[k], EventTime: base + int64(k), Fields: []agent.Field{agent.Float("temp", float64(i))}})
					if len(bt.Records) == 1024 || i == n-1 {
						if err := w.Process(ctx, bt); err != nil {
							b.Fatal(err)
						}
						bt.Records = bt.Records[:0]
					}
				}
			}
			feed(0, keys)
			if err := w.Snapshot(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := db.Checkpoint(nil); err != nil {
				b.Fatal(err)
			}
			var bytes, ckpts int64
			var total, cpu time.Duration
			cpuOK := true
			from := 0
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				feed(from, changed)
				from += changed
				runtime.GC() // the feed's garbage is not the checkpoint's cost
				b.StartTimer()
				start := time.Now()
				c0, _ := processCPU()
				if err := w.Snapshot(ctx); err != nil {
					b.Fatal(err)
				}
				st, err := db.Checkpoint(nil)
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				c1, ok := processCPU()
				cpuOK = cpuOK && ok
				cpu += c1 - c0
				bytes += st.BytesWritten
				ckpts++
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(ckpts), "ms/ckpt")
			if cpuOK {
				// CPU time of the process (GC included) per checkpoint: unlike
				// the wall time, it does not grow when other processes load
				// the machine.
				b.ReportMetric(float64(cpu.Milliseconds())/float64(ckpts), "cpu-ms/ckpt")
			}
			b.ReportMetric(float64(bytes)/float64(ckpts), "B/ckpt")
			b.ReportMetric(float64(bytes)/float64(ckpts)/float64(changed), "B/changed-key")
		})
	}
}

// TestHotPathAllocs checks that adding records to open windows allocates
// nothing per record (outputs, when windows close, do allocate).
func TestHotPathAllocs(t *testing.T) {
	c := meanConfig()
	c.Size = time.Hour
	w, err := New(c, agenttest.Env())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	recs := make([]agent.Record, 256)
	for i := range recs {
		recs[i] = agent.Record{Key: fmt.Sprintf("k%d", i%32), EventTime: base + int64(i), Fields: []agent.Field{agent.Float("temp", 1)}}
	}
	b := &agent.Batch{Records: make([]agent.Record, 0, len(recs))}
	ctx := context.Background()
	run := func() {
		b.Records = append(b.Records[:0], recs...)
		if err := w.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	run() // keys and windows are made once
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("got %v allocations per batch of %d records, want 0", n, len(recs))
	}
}
