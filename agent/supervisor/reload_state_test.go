package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// feedSource hands over the records put on its channel, one batch each; the
// channel outlives the pipeline generations, as a device would.
type feedSource struct{ in chan agent.Record }

func (s feedSource) Connect(context.Context) error { return nil }
func (s feedSource) Close(context.Context) error   { return nil }

func (s feedSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	select {
	case r := <-s.in:
		return []agent.Record{r}, func(context.Context, error) {}, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// collector keeps every record delivered to the "collect" sink by ID (a
// record delivered twice, at-least-once, is kept once).
type collector struct {
	mu   sync.Mutex
	byID map[string]agent.Record
	down atomic.Bool // Write fails while set
}

type collectSink struct{ c *collector }

func (s collectSink) Connect(context.Context) error { return nil }
func (s collectSink) Close(context.Context) error   { return nil }

func (s collectSink) Write(_ context.Context, recs []agent.Record) error {
	if s.c.down.Load() {
		return errors.New("collect sink: destination down")
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	for _, r := range recs {
		r.Fields = append([]agent.Field(nil), r.Fields...)
		s.c.byID[r.ID] = r
	}
	return nil
}

// window returns the delivered window that starts at start, if any.
func (c *collector) window(start time.Duration) (agent.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.byID {
		if r.EventTime == int64(start) {
			return r, true
		}
	}
	return agent.Record{}, false
}

// feedRegistry is pluginRegistry plus the "feed" source and the
// "collect" sink.
func feedRegistry(in chan agent.Record, c *collector) *runner.Registry {
	reg := pluginRegistry()
	type cfg struct {
		ID string `yaml:"id" doc:"unused: one feed per test"`
	}
	reg.Sources["feed"] = agent.Typed[agent.Source]("test feed", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Source, error) {
		return feedSource{in}, nil
	})
	reg.Sinks["collect"] = agent.Typed[agent.Sink]("test collector", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Sink, error) {
		return collectSink{c}, nil
	})
	return reg
}

// windowPipeline is a pipeline with event-time tumbling windows of size,
// after a filter with the given expression; retry is the sink's first retry
// delay.
func windowPipeline(filter string, size, retry time.Duration) string {
	return fmt.Sprintf(`sources:
  - feed: {}
operators:
  - filter: {expr: %q}
  - window:
      size: %s
      aggregates:
        - {fn: count}
        - {fn: sum, field: v}
sinks:
  - collect: {}
    retry: {initial: %s, max: 1s}
`, filter, size, retry)
}

// A windowed pipeline reloaded with unrelated changes (the filter before it,
// a sink option) keeps its open windows; reloaded with another window size,
// it drops them and says so. Windows close on event time only, so the
// outcome does not depend on timing. It holds for both state stores: the
// memory store is handed from one generation to the next.
func TestReloadCarriesWindowStateOver(t *testing.T) {
	for _, store := range []string{"bbolt", "memory"} {
		t.Run(store, func(t *testing.T) {
			testReloadCarriesWindowStateOver(t, func(filter string, size, retry time.Duration) string {
				return windowPipeline(filter, size, retry) + "state: {store: " + store + "}\n"
			})
		})
	}
}

func testReloadCarriesWindowStateOver(t *testing.T, windowPipeline func(filter string, size, retry time.Duration) string) {
	in := make(chan agent.Record)
	col := &collector{byID: map[string]agent.Record{}}
	h := startHarness(t, feedRegistry(in, col), map[string]string{"w.yaml": windowPipeline("v >= 0", 10*time.Second, 50*time.Millisecond)}, nil)
	fed := 0
	feed := func(at time.Duration, v int64) {
		t.Helper()
		select {
		case in <- agent.Record{EventTime: int64(at), Fields: []agent.Field{agent.Int("v", v)}}:
			fed++
		case <-time.After(10 * time.Second):
			t.Fatalf("feed source did not read\n%s", h.logs.String())
		}
	}
	// processed waits until the window has seen every record fed, so that a
	// reload finds them in its state, not still in the log.
	processed := func() {
		t.Helper()
		h.waitFor(fmt.Sprintf("the window to see %d records", fed), func() bool {
			for _, o := range h.view("w").Operators {
				if o.Name == "window" {
					return o.RecordsIn == uint64(fed)
				}
			}
			return false
		})
	}
	reload := func(body string, gen int) {
		t.Helper()
		saveTempRename(t, h.dir, "w.yaml", body, gen)
		h.waitFor(fmt.Sprintf("generation %d", gen), func() bool {
			v := h.view("w")
			return v.Generation == gen && v.State == StateRunning
		})
	}
	const dropped = "its state is dropped and it starts fresh"

	// Window [0s, 10s) is open with 1+2+3 when the pipeline reloads.
	for i := range int64(3) {
		feed(time.Duration(i+1)*time.Second, i+1)
	}
	processed()
	reload(windowPipeline("v > -1", 10*time.Second, 60*time.Millisecond), 2)
	if n := strings.Count(h.logs.String(), dropped); n != 0 {
		t.Fatalf("an unrelated change dropped state (%d log lines)\n%s", n, h.logs.String())
	}
	feed(4*time.Second, 4)
	feed(5*time.Second, 5)
	feed(21*time.Second, 7)  // opens [20s, 30s)
	feed(25*time.Second, 10) // the watermark passes 10s: [0s, 10s) closes
	h.waitFor("window [0s, 10s)", func() bool { _, ok := col.window(0); return ok })
	r, _ := col.window(0)
	if c, s := r.Field("count"), r.Field("v_sum"); c == nil || s == nil || c.Int != 5 || s.Float != 15 {
		t.Errorf("window [0s, 10s) = %v, want count 5 and v_sum 15 (the 3 records before the reload and 2 after)", r.Fields)
	}

	// [20s, 30s) holds 7+10; with 20s windows it would be [20s, 40s). The
	// changed operator starts fresh: its first window holds only what
	// comes after the reload.
	processed()
	reload(windowPipeline("v > -1", 20*time.Second, 60*time.Millisecond), 3)
	if n := strings.Count(h.logs.String(), dropped); n != 1 || !strings.Contains(h.logs.String(), "component=window") {
		t.Errorf("got %d log lines saying the window's state is dropped, want 1\n%s", n, h.logs.String())
	}
	feed(22*time.Second, 1000)
	feed(100*time.Second, 0) // closes [20s, 40s)
	h.waitFor("window [20s, 40s)", func() bool { _, ok := col.window(20 * time.Second); return ok })
	r, _ = col.window(20 * time.Second)
	if c, s := r.Field("count"), r.Field("v_sum"); c == nil || s == nil || c.Int != 1 || s.Float != 1000 {
		t.Errorf("window [20s, 40s) = %v, want count 1 and v_sum 1000 (only the record after the reload)", r.Fields)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// A gauge registered by a component (like pspf_mqtt_in_flight) reads the
// running generation's component after a reload, not the stopped one's.
func TestReloadedGaugeReadsTheNewGeneration(t *testing.T) {
	in := make(chan agent.Record)
	col := &collector{byID: map[string]agent.Record{}}
	reg := feedRegistry(in, col)
	type cfg struct {
		Value float64 `yaml:"value" doc:"what the gauge reads"`
	}
	reg.Sources["gauged"] = agent.Typed[agent.Source]("test source with a gauge", func() *cfg { return &cfg{} }, func(c *cfg, env agent.Env) (agent.Source, error) {
		v := c.Value
		env.Metrics.Gauge("pspf_test_gauge", func() float64 { return v }, "pipeline", env.Pipeline, "component", env.Component)
		return feedSource{in}, nil
	})
	file := func(v int) string {
		return fmt.Sprintf("sources:\n  - gauged: {value: %d}\nsinks:\n  - collect: {}\n", v)
	}
	h := startHarness(t, reg, map[string]string{"g.yaml": file(1)}, nil)
	gauge := func() float64 {
		var b strings.Builder
		h.sup.d.Metrics.WritePrometheus(&b)
		return metricValue(t, b.String(), `pspf_test_gauge{pipeline="g",component="gauged"}`)
	}
	if got := gauge(); got != 1 {
		t.Errorf("generation 1: got %v, want 1", got)
	}
	saveTempRename(t, h.dir, "g.yaml", file(2), 0)
	h.waitFor("generation 2", func() bool { v := h.view("g"); return v.Generation == 2 && v.State == StateRunning })
	if got := gauge(); got != 2 {
		t.Errorf("generation 2: got %v, want 2 (the gauge still reads generation 1)", got)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// Status of a pipeline with stateful operators: they are listed with the
// others, and the backlog is that of the outbox the sinks read (5 window
// results the offline sink has not taken), not of the pipeline log.
func TestStatefulPipelineStatus(t *testing.T) {
	in := make(chan agent.Record)
	col := &collector{byID: map[string]agent.Record{}}
	col.down.Store(true)
	h := startHarness(t, feedRegistry(in, col), map[string]string{"s.yaml": windowPipeline("v >= 0", 10*time.Second, 50*time.Millisecond)}, nil)
	for i := range 6 { // at 1s, 11s, ... 51s: closes the windows at 0s, 10s, ... 40s
		select {
		case in <- agent.Record{EventTime: int64(time.Duration(10*i+1) * time.Second), Fields: []agent.Field{agent.Int("v", 1)}}:
		case <-time.After(10 * time.Second):
			t.Fatal("feed source did not read")
		}
	}
	window := func(v PipelineView) runner.OperatorStatus {
		for _, o := range v.Operators {
			if o.Name == "window" {
				return o
			}
		}
		return runner.OperatorStatus{}
	}
	h.waitFor("5 window results", func() bool { return window(h.view("s")).RecordsOut == 5 })
	h.waitFor("the sink offline", func() bool { v := h.view("s"); return len(v.Sinks) == 1 && !v.Sinks[0].Online })
	v := h.view("s")
	if len(v.Operators) != 2 || window(v).RecordsIn != 6 {
		t.Errorf("operators %+v, want filter and window, the window with 6 records in", v.Operators)
	}
	if v.BacklogRecords != 5 || v.Sinks[0].Backlog != 5 || v.BacklogBytes <= 0 {
		t.Errorf("backlog %d (%d bytes), sink backlog %d; want 5, > 0 bytes, 5", v.BacklogRecords, v.BacklogBytes, v.Sinks[0].Backlog)
	}
	if v.Log.NextSeq != 6 || v.Input == nil || v.Input.NextSeq != 7 || v.Input.Backlog != 0 {
		t.Errorf("log next %d, input %+v; want the outbox (next 6) and the pipeline log (next 7, nothing unprocessed)", v.Log.NextSeq, v.Input)
	}
	col.down.Store(false)
	h.waitFor("the backlog delivered", func() bool { v := h.view("s"); return v.Sinks[0].Records == 5 && v.BacklogRecords == 0 })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// The reload's log line names what changed.
func TestDescribeChanges(t *testing.T) {
	reg := pluginRegistry()
	const base = "sources:\n  - simulate: {format: fields}\noperators:\n  - window: {size: 1s, aggregates: [{fn: count}]}\nsinks:\n  - console: {}\n"
	parse := func(body string) *runner.PipelineSpec {
		t.Helper()
		spec, err := reg.ParsePipeline("p.yaml", []byte(body), runner.DefaultAgentConfig().Defaults)
		if err != nil {
			t.Fatalf("%v\n%s", err, body)
		}
		return spec
	}
	for _, tt := range []struct{ name, body, want string }{
		{"nothing", base, ""},
		{"comment only", "# a comment\n" + base, ""},
		{"sink option", base + "    retry: {initial: 2s}\n", "~sink console"},
		{"window size", strings.Replace(base, "size: 1s", "size: 2s", 1), "~operator window"},
		{"operator added", strings.Replace(base, "operators:\n", "operators:\n  - filter: {expr: \"true\"}\n", 1), "+operator filter (filter), ~operator window"},
		{"checkpoint", base + "checkpoint: {interval: 1s}\n", "~checkpoint"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := describeChanges(parse(base), parse(tt.body)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
