package throttle

import (
	"context"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func TestThrottle(t *testing.T) {
	env := agenttest.Env()
	th, err := New(&Config{Rate: 1, Per: time.Second, Burst: 2}, env)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	in := []struct {
		key  string
		ms   int
		want bool
	}{
		{"a", 0, true}, {"a", 100, true}, {"a", 200, false}, // burst of 2
		{"b", 200, true},                      // its own bucket
		{"a", 1200, true}, {"a", 1300, false}, // one token back after a second
		{"a", 5000, true}, {"a", 5001, true}, {"a", 5002, false}, // refilled to the burst, not beyond
	}
	for _, c := range in {
		b := &agent.Batch{Records: []agent.Record{{Key: c.key, EventTime: base.Add(time.Duration(c.ms) * time.Millisecond).UnixNano()}}}
		if err := th.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if got := len(b.Records) == 1; got != c.want {
			t.Errorf("%s at %dms: passed %v, want %v", c.key, c.ms, got, c.want)
		}
	}
	if got := agenttest.Dropped(env, "throttled"); got != 3 {
		t.Errorf("throttled: got %d, want 3", got)
	}
}

func TestREADMESample(t *testing.T) {
	if ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "throttle", Factory(), agenttest.Env()); len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
}
