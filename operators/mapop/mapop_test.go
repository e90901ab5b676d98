package mapop

import (
	"context"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

func sample() agent.Record {
	return agent.Record{ID: "a", Fields: []agent.Field{
		agent.Float("temp", 25), agent.String("sensor", "s1"), agent.String("site", "north"),
		agent.Int("ts", 1700000000125), agent.Int("count", 4), agent.String("when", "2024-01-02T03:04:05.5Z"),
	}}
}

func text(r *agent.Record, name string) string {
	f := r.Field(name)
	if f == nil {
		return "<missing>"
	}
	return f.Kind.String() + ":" + string(f.AppendText(nil))
}

func TestProcess(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		field  string
		want   string
		key    string
		time   int64
		failed uint64
	}{
		{name: "float", cfg: Config{Set: map[string]string{"temp_f": "temp * 1.8 + 32"}}, field: "temp_f", want: "float:77"},
		{name: "int stays int", cfg: Config{Set: map[string]string{"count": "count + 1"}}, field: "count", want: "int:5"},
		{name: "bool", cfg: Config{Set: map[string]string{"hot": "temp > 20"}}, field: "hot", want: "bool:true"},
		{name: "string", cfg: Config{Set: map[string]string{"label": "site + \":\" + sensor"}}, field: "label", want: "string:north:s1"},
		{name: "replace", cfg: Config{Set: map[string]string{"temp": "temp - 5"}}, field: "temp", want: "float:20"},
		{name: "fallback", cfg: Config{Set: map[string]string{"part": "split(site, \"r\")[0]"}}, field: "part", want: "string:no"},
		{name: "key string", cfg: Config{Key: "site + \"/\" + sensor"}, key: "north/s1"},
		{name: "key number", cfg: Config{Key: "count * 2"}, key: "8"},
		{name: "time ms", cfg: Config{EventTime: "ts", TimeFormat: "unix_ms"}, time: 1700000000125e6},
		{name: "time s float", cfg: Config{EventTime: "ts / 1000", TimeFormat: "unix_s"}, time: 1700000000125e6},
		{name: "time rfc3339", cfg: Config{EventTime: "when"}, time: 1704164645500e6},
		{name: "missing field", cfg: Config{Set: map[string]string{"x": "nope + 1"}}, failed: 1},
		{name: "not finite", cfg: Config{Set: map[string]string{"x": "temp / 0"}}, failed: 1},
		{name: "bad time", cfg: Config{EventTime: "sensor"}, failed: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := agenttest.Env()
			if tt.cfg.TimeFormat == "" {
				tt.cfg.TimeFormat = "unix_ms"
			}
			m, err := New(&tt.cfg, env)
			if err != nil {
				t.Fatal(err)
			}
			b := &agent.Batch{Records: []agent.Record{sample()}}
			if err := m.Process(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if got := agenttest.Dropped(env, "expr_error"); got != tt.failed {
				t.Fatalf("expr_error: got %d, want %d", got, tt.failed)
			}
			if tt.failed > 0 {
				if len(b.Records) != 0 || len(b.Dead) != 1 {
					t.Fatalf("got %d records and %d dead, want 0 and 1", len(b.Records), len(b.Dead))
				}
				if got := b.Dead[0].Err.Error(); !strings.HasPrefix(got, "map: ") {
					t.Errorf("got %q, want prefix map: ", got)
				}
				return
			}
			r := &b.Records[0]
			if tt.field != "" {
				if got := text(r, tt.field); got != tt.want {
					t.Errorf("got %s, want %s", got, tt.want)
				}
			}
			if got := r.Key; got != tt.key {
				t.Errorf("key: got %q, want %q", got, tt.key)
			}
			if got := r.EventTime; got != tt.time {
				t.Errorf("event time: got %d, want %d", got, tt.time)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		text string
		want string
	}{
		{"operators:\n  - map:\n      set:\n        a: temp *\n", `test.yaml:4: operators[0].map.set.a: invalid expression: column 6: unexpected token EOF, got "temp *"`},
		{"operators:\n  - map:\n      key: (a\n", `test.yaml:3: operators[0].map.key: invalid expression: column 2:`},
		{"operators:\n  - map: {}\n", `test.yaml:2: operators[0].map: must have at least one of set, key or event_time`},
		{"operators:\n  - map:\n      event_time: ts\n      time_format: ms\n", `test.yaml:4: operators[0].map.time_format: must be unix_s, unix_ms, unix_us or unix_ns, got "ms"`},
		{"operators:\n  - map:\n      set:\n        a: 1 % 0\n", `test.yaml:4: operators[0].map.set.a: invalid expression: column 3: integer modulo by zero`},
		{"operators:\n  - map:\n      set:\n        a: celsius(temp)\n", `test.yaml:4: operators[0].map.set.a: invalid expression: column 1: unknown function celsius`},
		{"operators:\n  - map:\n      key: 'split(site, \"/\")'\n", `test.yaml:3: operators[0].map.key: invalid expression: column 1: result is a list`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := agenttest.ParseOperators(tt.text, "map", Factory())
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
	ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "map", Factory(), agenttest.Env())
	b := &agent.Batch{Records: []agent.Record{sample()}}
	if err := ops[0].Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if len(b.Dead) > 0 {
		t.Fatalf("dead: %v", b.Dead[0].Err)
	}
	r := &b.Records[0]
	// The entries run in file order: hot sees temp_f.
	for name, want := range map[string]string{"temp_f": "float:77", "hot": "bool:false", "label": "string:S1"} {
		if got := text(r, name); got != want {
			t.Errorf("%s: got %s, want %s", name, got, want)
		}
	}
	if r.Key != "north/s1" || r.EventTime != 1700000000125e6 {
		t.Errorf("got key %q time %d, want north/s1 %d", r.Key, r.EventTime, int64(1700000000125e6))
	}
}
