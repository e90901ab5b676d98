package dedup

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/state"
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
			env := agenttest.Env()
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
			if n := agenttest.Dropped(env, "duplicate"); int(n) != len(c.in)-len(c.wantID) {
				t.Errorf("duplicates counted: got %d, want %d", n, len(c.in)-len(c.wantID))
			}
		})
	}
}

func TestREADMESample(t *testing.T) {
	if ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "dedup", Factory(), agenttest.Env()); len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
}

// TestWallClockJump remembers identities across a restart whose wall clock
// is a day later (a board without an RTC whose clock NTP set while it was
// down): the state clock resumes from the checkpoint, so the table's TTL
// (ttl + gcSlack) does not expire them, and a duplicate within ttl by event
// time is still dropped.
func TestWallClockJump(t *testing.T) {
	wall := time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC) // the clock before NTP
	now := func() time.Time { return wall }
	path := filepath.Join(t.TempDir(), "state.db")
	event := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(id string, sec int) agent.Record {
		return agent.Record{ID: id, EventTime: event.Add(time.Duration(sec) * time.Second).UnixNano()}
	}
	run := func(recs ...agent.Record) (out []string, dups uint64) {
		db, err := state.Open(path, state.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		env := agenttest.Env()
		env.State = func(ttl time.Duration) (agent.StateTable, error) { return db.Table("op.dedup", ttl) }
		d, err := New(&Config{TTL: 10 * time.Minute}, env)
		if err != nil {
			t.Fatal(err)
		}
		b := &agent.Batch{Records: recs}
		if err := d.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Checkpoint(nil); err != nil {
			t.Fatal(err)
		}
		for _, r := range b.Records {
			out = append(out, r.ID)
		}
		return out, agenttest.Dropped(env, "duplicate")
	}
	if out, _ := run(rec("a", 0), rec("b", 1)); len(out) != 2 {
		t.Fatalf("first run: got %v, want [a b]", out)
	}
	wall = wall.Add(24 * time.Hour)
	out, dups := run(rec("a", 60), rec("b", 700), rec("c", 61))
	if len(out) != 2 || out[0] != "b" || out[1] != "c" || dups != 1 {
		t.Errorf("after a +1 day wall-clock jump: got %v with %d duplicates, want [b c] with 1 (a is within 10m of its first time)", out, dups)
	}
}
