package changes

import (
	"context"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func TestChanges(t *testing.T) {
	for _, first := range []bool{true, false} {
		env := agenttest.Env()
		c, err := New(&Config{Fields: []string{"level"}, EmitFirst: first}, env)
		if err != nil {
			t.Fatal(err)
		}
		in := []struct {
			key   string
			level any
			want  bool
		}{
			{"door", true, first}, {"door", true, false}, {"door", false, true}, {"door", false, false},
			{"gate", false, first}, {"door", nil, true}, {"door", nil, false}, {"door", true, true},
		}
		for i, x := range in {
			r := agent.Record{Key: x.key}
			if v, ok := x.level.(bool); ok {
				r.Fields = []agent.Field{agent.Bool("level", v)}
			}
			b := &agent.Batch{Records: []agent.Record{r}}
			if err := c.Process(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if got := len(b.Records) == 1; got != x.want {
				t.Errorf("emit_first %v, record %d (%s %v): forwarded %v, want %v", first, i, x.key, x.level, got, x.want)
			}
		}
	}
}

func TestREADMESample(t *testing.T) {
	if ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "changes", Factory(), agenttest.Env()); len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
}
