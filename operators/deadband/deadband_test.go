package deadband

import (
	"context"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func TestDeadband(t *testing.T) {
	env := agenttest.Env()
	d, err := New(&Config{Field: "v", Threshold: 0.5, Heartbeat: time.Minute}, env)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	in := []struct {
		key  string
		sec  int
		v    float64
		want bool
	}{
		{"a", 0, 20, true},    // first of its key
		{"a", 1, 20.4, false}, // within the band
		{"b", 1, 20.4, true},  // another key
		{"a", 2, 20.6, true},  // moved by 0.6 from 20
		{"a", 3, 20.2, false}, // 0.4 from 20.6
		{"a", 62, 20.2, true}, // heartbeat: 60 s since 20.6 was forwarded
		{"a", 63, 20.0, false},
	}
	for _, c := range in {
		b := &agent.Batch{Records: []agent.Record{{Key: c.key, EventTime: base.Add(time.Duration(c.sec) * time.Second).UnixNano(), Fields: []agent.Field{agent.Float("v", c.v)}}}}
		if err := d.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if got := len(b.Records) == 1; got != c.want {
			t.Errorf("%s at %ds = %v: forwarded %v, want %v", c.key, c.sec, c.v, got, c.want)
		}
	}
	if got := agenttest.Dropped(env, "deadband"); got != 3 {
		t.Errorf("suppressed: got %d, want 3", got)
	}
}

func TestREADMESample(t *testing.T) {
	ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "deadband", Factory(), agenttest.Env())
	if len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
}
