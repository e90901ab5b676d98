package window

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/state"
)

// TestSpillRefused: with a memory state store at its budget, keys the
// window spills are refused; they must stay in the window's memory (over
// memory_bytes, one WARN) rather than be lost, so that every key's result
// is right.
func TestSpillRefused(t *testing.T) {
	const keys = 2000
	store, err := state.NewMemory(state.Options{CacheBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	logs := &agenttest.LogBuffer{}
	env := agenttest.Env()
	env.Logger = slog.New(slog.NewTextHandler(logs, nil))
	env.State = func(ttl time.Duration) (agent.StateTable, error) { return store.Table("op.window", ttl) }
	c := DefaultConfig()
	c.Size = time.Minute
	c.MemoryBytes = 64 << 10
	c.Aggregates = []AggConfig{{Fn: "sum", Field: "v"}, {Fn: "count"}}
	w, err := New(c, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	got := map[string]float64{}
	b := &agent.Batch{}
	collect := func() {
		for _, r := range b.Records {
			if _, dup := got[r.Key]; dup {
				t.Fatalf("key %s emitted twice", r.Key)
			}
			got[r.Key] = r.Field("v_sum").Float
		}
		b.Records = b.Records[:0]
	}
	for i := range keys {
		key := "k" + strconv.Itoa(i)
		et := base + int64(i)*int64(10*time.Millisecond)
		b.Records = append(b.Records,
			agent.Record{Key: key, EventTime: et, Fields: []agent.Field{agent.Float("v", float64(i))}},
			agent.Record{Key: key, EventTime: et, Fields: []agent.Field{agent.Float("v", 1)}})
		if len(b.Records) >= 256 {
			if err := w.Process(ctx, b); err != nil {
				t.Fatal(err)
			}
			collect()
		}
	}
	if err := w.Process(ctx, b); err != nil {
		t.Fatal(err)
	}
	collect()
	if err := w.EndOfInput(ctx, b); err != nil {
		t.Fatal(err)
	}
	collect()
	if st := store.Stats(); st.Refused == 0 {
		t.Fatalf("the store refused nothing (%+v): the test does not fill it", st)
	}
	if len(got) != keys {
		t.Errorf("got %d results, want %d", len(got), keys)
	}
	for i := range keys {
		if v, want := got["k"+strconv.Itoa(i)], float64(i)+1; v != want {
			t.Fatalf("key k%d: sum %v, want %v", i, v, want)
		}
	}
	if n := strings.Count(logs.String(), "refused spilled keys"); n != 1 {
		t.Errorf("%d WARN lines about refused spills, want 1:\n%s", n, logs)
	}
}
