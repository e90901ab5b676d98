package filter

import (
	"context"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func records(temps ...any) []agent.Record {
	var out []agent.Record
	for i, t := range temps {
		r := agent.Record{ID: string(rune('a' + i))}
		switch t := t.(type) {
		case float64:
			r.Fields = []agent.Field{agent.Float("temp", t)}
		case string:
			r.Fields = []agent.Field{agent.String("temp", t)}
		}
		out = append(out, r)
	}
	return out
}

func ids(rs []agent.Record) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.ID)
	}
	return b.String()
}

func TestProcess(t *testing.T) {
	tests := []struct {
		name             string
		expr             string
		in               []agent.Record
		kept, dead       string
		filtered, failed uint64
	}{
		{"all kept", "temp > -50", records(1.0, 2.0), "ab", "", 0, 0},
		{"some filtered", "temp > 0", records(1.0, -2.0, 3.0, -4.0), "ac", "", 2, 0},
		{"missing field", "temp > 0", records(1.0, nil, 3.0), "ac", "b", 0, 1},
		{"wrong type", "temp > 0", records("hot", 3.0), "b", "a", 0, 1},
		{"guarded missing", "temp != nil && temp > 0", records(1.0, nil), "a", "", 1, 0},
		{"empty batch", "temp > 0", nil, "", "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := agenttest.Env()
			f, err := New(&Config{Expr: tt.expr}, env)
			if err != nil {
				t.Fatal(err)
			}
			b := &agent.Batch{Records: tt.in}
			if err := f.Process(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if got := ids(b.Records); got != tt.kept {
				t.Errorf("kept: got %q, want %q", got, tt.kept)
			}
			var dead []agent.Record
			for _, d := range b.Dead {
				dead = append(dead, d.Record)
				if !strings.HasPrefix(d.Err.Error(), "filter: ") {
					t.Errorf("dead error: got %q, want prefix filter: ", d.Err)
				}
			}
			if got := ids(dead); got != tt.dead {
				t.Errorf("dead: got %q, want %q", got, tt.dead)
			}
			if got := agenttest.Dropped(env, "filtered"); got != tt.filtered {
				t.Errorf("filtered: got %d, want %d", got, tt.filtered)
			}
			if got := agenttest.Dropped(env, "expr_error"); got != tt.failed {
				t.Errorf("expr_error: got %d, want %d", got, tt.failed)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		text string
		want string
	}{
		{"operators:\n  - filter:\n      expr: temp >\n", `test.yaml:3: operators[0].filter.expr: invalid expression: column 6: unexpected token EOF, got "temp >"`},
		{"operators:\n  - filter:\n      expr: temp * 2\n", `test.yaml:3: operators[0].filter.expr: must be a condition (true or false), not a number`},
		{"operators:\n  - filter: {}\n", `test.yaml:2: operators[0].filter.expr: must not be empty`},
		// With no body at all, the defaults are checked too.
		{"operators:\n  - filter:\n", `test.yaml:2: operators[0].filter.expr: must not be empty`},
		{"operators:\n  - filter:\n      exp: a > 1\n", `test.yaml:3: operators[0].filter.exp: unknown key; expected one of: expr`},
		{"operators:\n  - filter:\n      expr: 'a == \"x\" && b > > 1'\n", `column 17: unexpected token`},
		// Known before any record: every record would fail.
		{"operators:\n  - filter:\n      expr: nosuchfunc(temp) > 1\n", `test.yaml:3: operators[0].filter.expr: invalid expression: column 1: unknown function nosuchfunc, got "nosuchfunc(temp) > 1"`},
		{"operators:\n  - filter:\n      expr: 'split(device, \"-\")[1]'\n", `test.yaml:3: operators[0].filter.expr: must be a condition (true or false), not a string`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := agenttest.ParseOperators(tt.text, "filter", Factory())
			if err == nil {
				t.Fatalf("got no error, want %q", tt.want)
			}
			if got := err.Error(); !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

func TestREADMESample(t *testing.T) {
	env := agenttest.Env()
	ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "filter", Factory(), env)
	if len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
	b := &agent.Batch{Records: []agent.Record{
		{ID: "a", Fields: []agent.Field{agent.Float("temp", 20), agent.String("sensor", "s1")}},
		{ID: "b", Fields: []agent.Field{agent.Float("temp", 20), agent.String("sensor", "test")}},
	}}
	if err := ops[0].Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if got := ids(b.Records); got != "a" {
		t.Errorf("got %q, want %q", got, "a")
	}
}
