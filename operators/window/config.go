// Package window is the window operator: per-key tumbling, hopping, session
// and count windows over event time (a record's event time, a field, or its
// receive time) or processing time, with aggregates over several fields.
//
// Event-time windows close when the watermark — the highest event time seen
// minus the allowed lateness — passes their end. An event that arrives for a
// window that has already closed is late: it is counted as
// pspf_dropped_total{reason="late"} and, unless late is "count", sent to the
// dead-letter output; it is never dropped silently. Processing-time windows
// and early emission measure time on the monotonic clock (Batch.Now.Sub), so a
// wall-clock jump neither fires nor freezes them.
//
// Per-key aggregates live in memory in fixed structs (no allocation per
// record) and are written to the operator's state table at each checkpoint
// (Snapshot), atomically with the log position; over the memory budget, keys
// are spilled to the table and read back on demand. Every output carries a
// stable ID: pipeline, operator, key and window start.
//
// See README.md for the configuration and the guarantees.
package window

import (
	"fmt"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/operators/expr"
	"github.com/pspf/pspf-edge/operators/internal/timeunit"
)

// Config is the window operator's config.
type Config struct {
	// Type is the kind of window.
	Type string `yaml:"type" enum:"tumbling,hopping,session,count" doc:"tumbling (fixed, adjacent), hopping (fixed, every step), session (closed by a gap) or count (every count records)"`
	// Size is the length of tumbling and hopping windows.
	Size time.Duration `yaml:"size" doc:"length of a tumbling or hopping window"`
	// Step is how often a hopping window starts.
	Step time.Duration `yaml:"step" doc:"hopping windows start every step (size must be a multiple of it)"`
	// Gap closes a session window after that long without an event.
	Gap time.Duration `yaml:"gap" doc:"a session ends after this long without an event of its key"`
	// Count is the number of records of a count window.
	Count int `yaml:"count" doc:"records per count window"`
	// Time says which clock places records in windows.
	Time string `yaml:"time" enum:"event,receive,processing" doc:"event time (the record's, or time_field), receive time, or processing time"`
	// TimeField holds the event time as a number of time_unit since the Unix epoch.
	TimeField string `yaml:"time_field" doc:"numeric field with the event time since the Unix epoch, in time_unit; default: the record's event time"`
	// TimeUnit is the unit of TimeField.
	TimeUnit string `yaml:"time_unit" enum:"s,ms,us,ns" doc:"unit of time_field"`
	// Lateness is how far behind the highest event time an event may be and still count.
	Lateness time.Duration `yaml:"lateness" min:"0" doc:"allowed lateness: windows close when the highest event time seen minus this passes their end"`
	// Late says what happens to late events.
	Late string `yaml:"late" enum:"dead_letter,count" doc:"late events go to the dead-letter output, or are only counted (pspf_dropped_total{reason=\"late\"} either way)"`
	// EmitEvery emits the current results of open windows periodically (processing time).
	EmitEvery time.Duration `yaml:"emit_every" doc:"also emit early results of open windows this often (processing time); 0: only final results"`
	// Where, an expression, selects the records that are aggregated.
	Where string `yaml:"where" doc:"only records for which this expression is true are aggregated (others are dropped, counted as filtered)"`
	// Aggregates are the values computed per window.
	Aggregates []AggConfig `yaml:"aggregates" doc:"what each window computes"`
	// MemoryBytes bounds the per-key state held in memory; beyond it keys spill to the state file.
	MemoryBytes agent.ByteSize `yaml:"memory_bytes" min:"64KiB" doc:"memory budget for per-key window state; colder keys spill to the state file"`
}

// AggConfig is one aggregate of a window.
type AggConfig struct {
	// Fn is the aggregate function.
	Fn string `yaml:"fn" required:"true" enum:"count,sum,min,max,mean,first,last,stddev,p50,p90,p99,rate,delta" doc:"aggregate function"`
	// Field is the numeric field aggregated (not needed by count).
	Field string `yaml:"field" doc:"numeric field to aggregate"`
	// Expr computes the value to aggregate instead of Field.
	Expr string `yaml:"expr" doc:"expression whose value is aggregated, instead of field"`
	// As names the output field; default FIELD_FN, or count.
	As string `yaml:"as" doc:"output field name; default FIELD_FN (count: count)"`
}

// DefaultConfig returns the defaults: tumbling event-time windows, late
// events to the dead letters, 16 MiB of memory.
func DefaultConfig() *Config {
	return &Config{Type: "tumbling", Time: "event", TimeUnit: "ms", Late: "dead_letter", MemoryBytes: 16 << 20}
}

// Validate checks the rules between the window's keys, beyond its fields'
// tags.
func (c *Config) Validate(n agent.Node) {
	switch c.Type {
	case "tumbling", "hopping":
		if c.Size <= 0 {
			n.Field("size").Errorf("must be positive for %s windows, got %q", c.Type, n.Field("size").Text())
		}
	case "session":
		if c.Gap <= 0 {
			n.Field("gap").Errorf("must be positive for session windows, got %q", n.Field("gap").Text())
		}
	case "count":
		if c.Count <= 0 {
			n.Field("count").Errorf("must be positive for count windows, got %q", n.Field("count").Text())
		}
	}
	if c.Type == "hopping" {
		// Each record updates size/step windows: the bound keeps a typo from
		// making every record update thousands of them.
		if c.Step <= 0 || c.Size%c.Step != 0 || c.Size/c.Step > 64 {
			n.Field("step").Errorf("must divide size into at most 64 steps, got %q", n.Field("step").Text())
		}
	}
	if c.EmitEvery < 0 || (c.EmitEvery > 0 && c.EmitEvery < 10*time.Millisecond) {
		n.Field("emit_every").Errorf("must be 0 or at least 10ms, got %q", n.Field("emit_every").Text())
	}
	if c.Where != "" {
		if _, err := expr.Compile(c.Where); err != nil {
			n.Field("where").Errorf("%v", err)
		}
	}
	if len(c.Aggregates) == 0 {
		n.Field("aggregates").Errorf("must list at least one aggregate")
	}
	seen := map[string]bool{"window_start": true, "window_end": true, "final": true}
	for i, a := range c.Aggregates {
		an := n.Field("aggregates").Index(i)
		if a.Fn == "" {
			continue // the required tag says so
		}
		if a.Fn != "count" && a.Field == "" && a.Expr == "" {
			an.Errorf("%s needs field or expr", a.Fn)
		}
		if a.Field != "" && a.Expr != "" {
			an.Field("expr").Errorf("must not be set together with field")
		}
		if a.Expr != "" {
			if _, err := expr.Compile(a.Expr); err != nil {
				an.Field("expr").Errorf("%v", err)
			}
			if a.As == "" {
				an.Field("as").Errorf("must name the output of an expr")
			}
		}
		name := a.outName()
		if seen[name] {
			an.Errorf("output field %q is produced twice; set as", name)
		}
		seen[name] = true
	}
}

func (a *AggConfig) outName() string {
	switch {
	case a.As != "":
		return a.As
	case a.Fn == "count" && a.Field == "":
		return "count"
	}
	return strings.ReplaceAll(a.Field, ".", "_") + "_" + a.Fn
}

// Factory returns the window operator's factory (stateful).
func Factory() agent.Factory[agent.Operator] {
	f := agent.Typed("per-key tumbling, hopping, session and count windows with aggregates", DefaultConfig, func(c *Config, env agent.Env) (agent.Operator, error) {
		w, err := New(c, env)
		if err != nil {
			return nil, err
		}
		return w, nil
	})
	f.Stateful = true
	return f
}

func unitNanos(u string) int64 {
	if n, ok := timeunit.Nanos(u); ok {
		return n
	}
	return int64(time.Millisecond) // the default, ms
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("window: "+format, args...)
}
