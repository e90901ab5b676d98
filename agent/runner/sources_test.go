package runner_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/operators/filter"
	"github.com/pspf/pspf-edge/operators/mapop"
)

// TestPipelineSourcesRunOwnChains runs three sources at once through the
// real decode, filter and map operators, whose instances keep scratch
// buffers and are not safe for concurrent use: each source must run a chain
// of its own (the race detector catches a shared one). Every valid payload
// must arrive exactly once, mapped, and the per-operator counters add up
// over the sources.
func TestPipelineSourcesRunOwnChains(t *testing.T) {
	const sources, batches, perBatch = 3, 40, 25
	reg := runner.NewRegistry()
	reg.Operators["decode"] = decode.Factory()
	reg.Operators["filter"] = filter.Factory()
	reg.Operators["map"] = mapop.Factory()
	var srcs []*agenttest.ScriptSource
	want := map[string]bool{}
	for s := range sources {
		var bs [][]agent.Record
		for b := range batches {
			var recs []agent.Record
			for i := range perBatch {
				n := (s*batches+b)*perBatch + i
				// Every seventh reading is below the filter's threshold.
				temp := 20 + float64(n%50)/10
				if n%7 == 0 {
					temp = -99
				} else {
					want[strconv.Itoa(n)] = true
				}
				recs = append(recs, agent.Record{Raw: fmt.Appendf(nil, `{"n":%d,"temp":%.1f,"site":"s%d"}`, n, temp, s)})
			}
			bs = append(bs, recs)
		}
		srcs = append(srcs, agenttest.NewScriptSource(bs...))
	}
	none := func() *noConfig { return &noConfig{} }
	built := 0
	reg.Sources["script"] = agent.Typed[agent.Source]("test", none, func(*noConfig, agent.Env) (agent.Source, error) {
		if built == len(srcs) {
			return nil, fmt.Errorf("only %d scripts", len(srcs))
		}
		built++
		return srcs[built-1], nil
	})
	sink := &agenttest.RecordingSink{}
	reg.Sinks["rec"] = agent.Typed[agent.Sink]("test", none, func(*noConfig, agent.Env) (agent.Sink, error) { return sink, nil })

	m, err := runPipeline(t, reg, `
sources: [{script: {}}, {script: {}}, {script: {}}]
operators:
  - decode: {format: json}
  - filter: {expr: "temp > -50"}
  - map: {set: {label: upper(site)}, key: 'site + "/" + lower(site)'}
sinks: [{rec: {}, retry: {initial: 1ms, max: 5ms}}]
`, 30*time.Second)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	seen := map[string]int{}
	for _, r := range sink.Records() {
		f := r.Field("n")
		if f == nil {
			t.Fatalf("record %s has no field n: %+v", r.ID, r.Fields)
		}
		n := strconv.FormatInt(f.Int, 10)
		seen[n]++
		site := r.Field("site")
		if l := r.Field("label"); l == nil || site == nil || l.Str != strings.ToUpper(site.Str) || r.Key != site.Str+"/"+site.Str {
			t.Errorf("record n=%s: label %v, key %q; want the site upper-cased and site/site", n, l, r.Key)
		}
	}
	var lost, dup, extra int
	for n := range want {
		switch c := seen[n]; {
		case c == 0:
			lost++
		case c > 1:
			dup++
		}
	}
	for n := range seen {
		if !want[n] {
			extra++
		}
	}
	if lost != 0 || dup != 0 || extra != 0 {
		t.Errorf("got %d lost, %d duplicated, %d unexpected of %d payloads; want none", lost, dup, extra, len(want))
	}
	total := sources * batches * perBatch
	for _, c := range []struct{ op, name string }{
		{"decode", "pspf_operator_records_in_total"},
		{"filter", "pspf_operator_records_in_total"},
		{"filter", "pspf_operator_records_out_total"},
	} {
		got := counterValue(m, c.name, c.op)
		w := total
		if c.name == "pspf_operator_records_out_total" {
			w = len(want)
		}
		if got != w {
			t.Errorf("%s{component=%q} = %d, want %d (all sources together)", c.name, c.op, got, w)
		}
	}
}

// counterValue returns the value of pipeline p's counter name of component.
func counterValue(m *runner.Metrics, name, component string) int {
	return int(m.Counter(name, "pipeline", "p", "component", component).Get())
}
