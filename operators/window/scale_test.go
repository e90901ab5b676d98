package window

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/state"
)

// manyKeys runs keys distinct keys, two readings each, through a 1-minute
// tumbling sum with a memory budget of budget bytes for the window and for
// the state cache, checkpointing whenever the state cache asks (as the
// runner does). The keys' readings are spread over ten minutes of event
// time. It checks every key's sum once and returns the peak heap in use.
func manyKeys(t testing.TB, keys int, budget int64) (peakHeap uint64) {
	db, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{CacheBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := agenttest.Env()
	env.State = func(ttl time.Duration) (agent.StateTable, error) { return db.Table("op.window", ttl) }
	c := DefaultConfig()
	c.Size = time.Minute
	c.MemoryBytes = agent.ByteSize(budget)
	c.Aggregates = []AggConfig{{Fn: "sum", Field: "v"}, {Fn: "count"}}
	w, err := New(c, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	span := int64(10 * time.Minute)
	got := make([]float64, keys)
	outputs := 0
	sample := func() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapInuse)
	}
	check := func(b *agent.Batch) {
		for _, r := range b.Records {
			k, err := strconv.Atoi(r.Key[1:])
			if err != nil || k >= keys {
				t.Fatalf("unexpected output key %q", r.Key)
			}
			if got[k] != 0 {
				t.Fatalf("key %s emitted twice", r.Key)
			}
			got[k] = r.Field("v_sum").Float
			outputs++
		}
		b.Records = b.Records[:0]
	}
	b := &agent.Batch{}
	const batch = 2048
	for i := range keys {
		et := base + int64(i)*(span/int64(keys))
		key := "k" + strconv.Itoa(i)
		b.Records = append(b.Records,
			agent.Record{Key: key, EventTime: et, Fields: []agent.Field{agent.Float("v", float64(i))}},
			agent.Record{Key: key, EventTime: et, Fields: []agent.Field{agent.Float("v", 1)}})
		if len(b.Records) < batch && i < keys-1 {
			continue
		}
		if err := w.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
		if w.mem > w.budget {
			t.Fatalf("window memory %d over its budget %d", w.mem, w.budget)
		}
		check(b)
		select {
		case <-db.Pressure():
			if err := w.Snapshot(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Checkpoint(nil); err != nil {
				t.Fatal(err)
			}
		default:
		}
		if (i/batch)%16 == 0 {
			sample()
		}
	}
	if err := w.EndOfInput(ctx, b); err != nil {
		t.Fatal(err)
	}
	check(b)
	sample()
	if outputs != keys {
		t.Errorf("got %d outputs, want %d", outputs, keys)
	}
	for k, v := range got {
		if v != float64(k)+1 {
			t.Fatalf("key k%d: sum %v, want %d", k, v, k+1)
		}
	}
	return peakHeap
}

// TestManyKeysSmallBudget: 100k distinct keys under 1 MiB of window memory
// and 1 MiB of state cache. Every key's result is right and emitted once,
// the window stays within its budget, and the heap stays bounded (budgets,
// plus one minute's outputs, plus bbolt's transient commit buffers)
// whatever the number of keys. BenchmarkMillionKeys runs 1M keys.
func TestManyKeysSmallBudget(t *testing.T) {
	peak := manyKeys(t, 100_000, 1<<20)
	t.Logf("peak heap in use: %.1f MiB", float64(peak)/(1<<20))
	if peak > 64<<20 {
		t.Errorf("peak heap %d MiB, want under 64 MiB", peak>>20)
	}
}

// BenchmarkMillionKeys is TestManyKeysSmallBudget with 1M distinct keys
// and 4 MiB budgets; it reports the peak heap in use.
//
//	go test -run '^$' -bench MillionKeys -benchtime 1x ./operators/window/
func BenchmarkMillionKeys(b *testing.B) {
	for b.Loop() {
		peak := manyKeys(b, 1_000_000, 4<<20)
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	}
}

// TestWallClockJump: the batch clock jumping a day forward and a day back
// mid-stream changes nothing for event-time windows.
func TestWallClockJump(t *testing.T) {
	run := func(jump bool) string {
		c := DefaultConfig()
		c.Size = time.Second
		c.Lateness = 200 * time.Millisecond
		c.Aggregates = []AggConfig{{Fn: "mean", Field: "v"}, {Fn: "count"}}
		w, err := New(c, agenttest.Env())
		if err != nil {
			t.Fatal(err)
		}
		base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		var out []byte
		for i := range 100 {
			now := base.Add(time.Duration(i) * 50 * time.Millisecond)
			if jump && i >= 30 {
				now = now.Add(24 * time.Hour)
			}
			if jump && i >= 60 {
				now = now.Add(-48 * time.Hour)
			}
			b := &agent.Batch{Now: now, Records: []agent.Record{{Key: fmt.Sprint("k", i%3), EventTime: base.Add(time.Duration(i*37%100) * 40 * time.Millisecond).UnixNano(),
				Fields: []agent.Field{agent.Float("v", float64(i))}}}}
			if err := w.Process(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if err := w.OnTimer(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			for j := range b.Records {
				out = agent.AppendJSON(out, &b.Records[j])
				out = append(out, '\n')
			}
			for _, d := range b.Dead {
				out = append(out, d.Err.Error()...)
				out = append(out, '\n')
			}
		}
		b := &agent.Batch{Now: base}
		if err := w.EndOfInput(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		for j := range b.Records {
			out = agent.AppendJSON(out, &b.Records[j])
			out = append(out, '\n')
		}
		return string(out)
	}
	steady, jumped := run(false), run(true)
	if steady != jumped {
		t.Errorf("a wall-clock jump changed the output:\nsteady:\n%s\njumped:\n%s", steady, jumped)
	}
	if len(steady) == 0 {
		t.Error("no output")
	}
}
