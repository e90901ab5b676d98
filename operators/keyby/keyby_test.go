package keyby

import (
	"context"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func rec() agent.Record {
	return agent.Record{ID: "a", Fields: []agent.Field{agent.String("site", "north"), agent.String("sensor", "s1"), agent.Int("n", 7), agent.Float("t", 21.5)}}
}

func TestProcess(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		want    string
		missing uint64
	}{
		{"string field", Config{Field: "sensor"}, "s1", 0},
		{"int field", Config{Field: "n"}, "7", 0},
		{"joined", Config{Fields: []string{"site", "sensor", "t"}, Separator: "/"}, "north/s1/21.5", 0},
		{"missing rejected", Config{Field: "nope", Missing: "reject"}, "", 1},
		{"missing part rejected", Config{Fields: []string{"site", "nope"}, Missing: "reject"}, "", 1},
		{"missing empty", Config{Fields: []string{"site", "nope", "n"}, Separator: ":", Missing: "empty"}, "north::7", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := agenttest.Env()
			b := &agent.Batch{Records: []agent.Record{rec()}}
			if err := New(&tt.cfg, env).Process(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if got := agenttest.Dropped(env, "missing_key"); got != tt.missing {
				t.Fatalf("missing_key: got %d, want %d", got, tt.missing)
			}
			if tt.missing > 0 {
				if len(b.Records) != 0 || len(b.Dead) != 1 || !strings.HasPrefix(b.Dead[0].Err.Error(), "key_by: ") {
					t.Fatalf("got %d records, dead %v; want the record dead-lettered", len(b.Records), b.Dead)
				}
				return
			}
			if got := b.Records[0].Key; got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKeyAllocs(t *testing.T) {
	k := New(&Config{Field: "sensor"}, agenttest.Env())
	r := rec()
	if got := testing.AllocsPerRun(100, func() { k.Key(&r) }); got != 0 {
		t.Errorf("got %v allocs for a string key, want 0", got)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"operators:\n  - key_by: {}\n", "test.yaml:2: operators[0].key_by: must have field or fields"},
		{"operators:\n  - key_by:\n      field: a\n      fields: [b]\n", "test.yaml:4: operators[0].key_by.fields: must not be set together with field"},
		{"operators:\n  - key_by:\n      field: a\n      missing: skip\n", `test.yaml:4: operators[0].key_by.missing: must be reject or empty, got "skip"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := agenttest.ParseOperators(tt.text, "key_by", Factory())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestREADMESample(t *testing.T) {
	ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "key_by", Factory(), agenttest.Env())
	b := &agent.Batch{Records: []agent.Record{rec()}}
	if err := ops[0].Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if got := b.Records[0].Key; got != "north/s1" {
		t.Errorf("got %q, want north/s1", got)
	}
}
