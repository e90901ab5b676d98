package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// A reload keeps an operator's state table exactly when the operator's type,
// name, place and decoded parameters are the same.
func TestOpTableFollowsTypePlaceAndParameters(t *testing.T) {
	type winCfg struct {
		Size time.Duration `yaml:"size" doc:"window size"`
		Aggs []string      `yaml:"aggs" doc:"aggregates"`
		Late string        `yaml:"late" doc:"late events"`
	}
	type none struct{}
	reg := NewRegistry()
	reg.Sources["src"] = agent.Typed[agent.Source]("source", func() *none { return &none{} }, func(*none, agent.Env) (agent.Source, error) { return nil, nil })
	reg.Sinks["snk"] = agent.Typed[agent.Sink]("sink", func() *none { return &none{} }, func(*none, agent.Env) (agent.Sink, error) { return nil, nil })
	reg.Operators["pass"] = agent.Typed[agent.Operator]("stateless", func() *none { return &none{} }, func(*none, agent.Env) (agent.Operator, error) { return nil, nil })
	win := agent.Typed[agent.Operator]("stateful", func() *winCfg { return &winCfg{Late: "dead_letter"} }, func(*winCfg, agent.Env) (agent.Operator, error) { return nil, nil })
	win.Stateful = true
	reg.Operators["win"] = win
	reg.Operators["win2"] = win

	table := func(t *testing.T, ops string) string {
		t.Helper()
		spec, err := reg.ParsePipeline("p.yaml", []byte("sources:\n  - src: {}\noperators:\n"+ops+"sinks:\n  - snk: {}\n"), Defaults{Buffer: DefaultBufferConfig()})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range spec.Operators {
			if strings.HasPrefix(c.Type, "win") {
				return opTable(c)
			}
		}
		t.Fatal("no window operator")
		return ""
	}
	base := table(t, "  - win: {size: 1s, aggs: [count, sum]}\n")
	if !strings.HasPrefix(base, "op.win.") {
		t.Errorf("got table %q, want op.win.HASH", base)
	}
	for _, tt := range []struct {
		name, ops string
		same      bool
	}{
		{"the same", "  - win: {size: 1s, aggs: [count, sum]}\n", true},
		{"keys reordered, another unit, a default written out", "  - win:\n      aggs: [count, sum]   # a comment\n      late: dead_letter\n      size: 1000ms\n", true},
		{"another size", "  - win: {size: 2s, aggs: [count, sum]}\n", false},
		{"another aggregate", "  - win: {size: 1s, aggs: [count]}\n", false},
		{"another type", "  - win2: {size: 1s, aggs: [count, sum]}\n    name: win\n", false},
		{"another place", "  - pass: {}\n  - win: {size: 1s, aggs: [count, sum]}\n", false},
		{"another name", "  - win: {size: 1s, aggs: [count, sum]}\n    name: w\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := table(t, tt.ops); (got == base) != tt.same {
				t.Errorf("got table %q for %q, base %q; want the same table: %v", got, tt.ops, base, tt.same)
			}
		})
	}
}
