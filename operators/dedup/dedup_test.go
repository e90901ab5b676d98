package dedup

import (
	"context"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/operators/internal/optest"
)

func TestDedup(t *testing.T) {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(sec int, id, sensor string, seq int64) agent.Record {
		return agent.Record{ID: id, EventTime: base.Add(time.Duration(sec) * time.Second).UnixNano(),
			Fields: []agent.Field{agent.String("sensor", sensor), agent.Int("seq", seq)}}
	}
	cases := []struct {
		name   string
		cfg    Config
		in     []agent.Record
		wantID []string
	}{
		{"by id", Config{TTL: time.Minute}, []agent.Record{
			rec(0, "x", "a", 1), rec(1, "x", "a", 1), rec(2, "y", "a", 1), rec(61, "x", "a", 1), rec(62, "x", "a", 1),
		}, []string{"x", "y", "x"}},
		{"by fields", Config{Fields: []string{"sensor", "seq"}, TTL: time.Minute}, []agent.Record{
			rec(0, "1", "a", 1), rec(1, "2", "a", 1), rec(2, "3", "b", 1), rec(3, "4", "a", 2), rec(4, "5", "a", 2),
		}, []string{"1", "3", "4"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := optest.Env()
			d, err := New(&c.cfg, env)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range c.in {
				// One record per batch and all at once must agree; here, one.
				b := &agent.Batch{Records: []agent.Record{r}}
				if err := d.Process(context.Background(), b); err != nil {
					t.Fatal(err)
				}
				for _, o := range b.Records {
					got = append(got, o.ID)
				}
			}
			if len(got) != len(c.wantID) {
				t.Fatalf("got %v, want %v", got, c.wantID)
			}
			for i := range got {
				if got[i] != c.wantID[i] {
					t.Errorf("got %v, want %v", got, c.wantID)
				}
			}
			if n := optest.Dropped(env, "duplicate"); int(n) != len(c.in)-len(c.wantID) {
				t.Errorf("duplicates counted: got %d, want %d", n, len(c.in)-len(c.wantID))
			}
		})
	}
}

func TestREADMESample(t *testing.T) {
	if ops := optest.Build(t, optest.READMESample(t, "README.md"), "dedup", Factory(), optest.Env()); len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
}
