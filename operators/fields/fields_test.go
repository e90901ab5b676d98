package fields

import (
	"context"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func rec() agent.Record {
	return agent.Record{Fields: []agent.Field{
		agent.Float("temp", 1), agent.Float("hum", 2), agent.String("meta.fw", "1.2"), agent.String("meta.hw", "b"), agent.Int("debug", 3),
	}}
}

func names(r *agent.Record) string {
	var out []string
	for _, f := range r.Fields {
		out = append(out, f.Name)
	}
	return strings.Join(out, ",")
}

func TestRecord(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"keep", Config{Keep: []string{"temp", "meta.*"}}, "temp,meta.fw,meta.hw"},
		{"drop", Config{Drop: []string{"debug", "meta.*"}}, "temp,hum"},
		{"drop then keep", Config{Keep: []string{"meta.*"}, Drop: []string{"meta.hw"}}, "meta.fw"},
		{"rename", Config{Rename: map[string]string{"temp": "t"}}, "hum,meta.fw,meta.hw,debug,t"},
		{"rename onto existing", Config{Rename: map[string]string{"temp": "hum"}}, "hum,meta.fw,meta.hw,debug"},
		{"rename absent", Config{Rename: map[string]string{"nope": "x"}}, "temp,hum,meta.fw,meta.hw,debug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rec()
			New(&tt.cfg, agenttest.Env()).Record(&r)
			if got := names(&r); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"operators:\n  - fields: {}\n", "test.yaml:2: operators[0].fields: must have at least one of keep, drop or rename"},
		{"operators:\n  - fields:\n      keep: [\"[a\"]\n", `test.yaml:3: operators[0].fields.keep[0]: must be a field name or a pattern like meta.*, got "[a"`},
		{"operators:\n  - fields:\n      rename: {a: \"\"}\n", `test.yaml:3: operators[0].fields.rename.a: must rename a field to a non-empty name`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := agenttest.ParseOperators(tt.text, "fields", Factory())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestREADMESample(t *testing.T) {
	ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "fields", Factory(), agenttest.Env())
	b := &agent.Batch{Records: []agent.Record{rec()}}
	if err := ops[0].Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if got, want := names(&b.Records[0]), "temperature_c,humidity"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
