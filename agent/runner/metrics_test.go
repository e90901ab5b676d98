package runner

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"testing"
)

func gaugeText(m *Metrics) string {
	var b bytes.Buffer
	m.WritePrometheus(&b)
	return b.String()
}

// A component rebuilt by a reload registers its gauge again: the gauge must
// read the new component from then on.
func TestGaugeFollowsTheLastRegistration(t *testing.T) {
	m := NewMetrics()
	m.Gauge("pspf_test_in_flight", func() float64 { return 1 }, "pipeline", "p")
	if got, want := gaugeText(m), `pspf_test_in_flight{pipeline="p"} 1`; !strings.Contains(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	m.Gauge("pspf_test_in_flight", func() float64 { return 2 }, "pipeline", "p")
	if got, want := gaugeText(m), `pspf_test_in_flight{pipeline="p"} 2`; !strings.Contains(got, want) {
		t.Errorf("after a second registration: got %q, want %q", got, want)
	}
	m.Remove("pspf_test_in_flight", "pipeline", "p")
	if got := gaugeText(m); strings.Contains(got, "pspf_test_in_flight") {
		t.Errorf("after Remove: got %q, want no pspf_test_in_flight", got)
	}
	m.Gauge("pspf_test_in_flight", func() float64 { return 3 }, "pipeline", "p")
	m.Unregister("pipeline", "p")
	m.Gauge("pspf_test_in_flight", func() float64 { return 4 }, "pipeline", "p")
	if got, want := gaugeText(m), `pspf_test_in_flight{pipeline="p"} 4`; !strings.Contains(got, want) {
		t.Errorf("registered again after Unregister: got %q, want %q", got, want)
	}
}

// TestLabelsMatchExactly: a pipeline's metrics are found (Unregister,
// sumByLabel) by their exact pipeline label, never by a substring: not
// those of a pipeline whose name extends it (temp and temp2), nor those
// whose other labels merely end with the same name and value
// (upstream_pipeline="temp").
func TestLabelsMatchExactly(t *testing.T) {
	m := NewMetrics()
	m.Counter("pspf_dropped_total", "pipeline", "temp", "component", "c", "reason", "filtered").Add(1)
	m.Counter("pspf_dropped_total", "pipeline", "temp", "component", "c", "sub_reason", "x", "reason", "late").Add(2)
	m.Counter("pspf_dropped_total", "pipeline", "temp2", "component", "c", "reason", "filtered").Add(10)
	m.Counter("pspf_dropped_total", "pipeline", "temp2", "component", "c", "upstream_pipeline", "temp", "reason", "filtered").Add(100)
	m.Gauge("pspf_test_gauge", func() float64 { return 1 }, "pipeline", "temp")
	m.Gauge("pspf_test_gauge", func() float64 { return 2 }, "pipeline", "temp2")

	for _, tc := range []struct {
		pipeline string
		want     map[string]uint64
	}{
		{"temp", map[string]uint64{"filtered": 1, "late": 2}},
		{"temp2", map[string]uint64{"filtered": 110}},
		{"tem", map[string]uint64{}},
	} {
		if got := m.sumByLabel("pspf_dropped_total", "pipeline", tc.pipeline, "reason"); !maps.Equal(got, tc.want) {
			t.Errorf("drops of %s: got %v, want %v", tc.pipeline, got, tc.want)
		}
	}

	m.Unregister("pipeline", "temp")
	text := gaugeText(m)
	for _, gone := range []string{`{pipeline="temp",`, `{pipeline="temp"}`} {
		if strings.Contains(text, gone) {
			t.Errorf("after Unregister(pipeline, temp): %s is still there:\n%s", gone, text)
		}
	}
	for _, kept := range []string{
		`pspf_dropped_total{pipeline="temp2",component="c",reason="filtered"} 10`,
		`pspf_dropped_total{pipeline="temp2",component="c",upstream_pipeline="temp",reason="filtered"} 100`,
		`pspf_test_gauge{pipeline="temp2"} 2`,
	} {
		if !strings.Contains(text, kept) {
			t.Errorf("after Unregister(pipeline, temp): got\n%s\nwant %s kept", text, kept)
		}
	}
	// The drops summed follow what is registered: none of an unregistered
	// pipeline, none of a removed counter, and a counter created again
	// counts from zero.
	m.Remove("pspf_dropped_total", "pipeline", "temp2", "component", "c", "upstream_pipeline", "temp", "reason", "filtered")
	m.Counter("pspf_dropped_total", "pipeline", "temp", "component", "c", "reason", "late").Add(3)
	for _, tc := range []struct {
		pipeline string
		want     map[string]uint64
	}{
		{"temp", map[string]uint64{"late": 3}},
		{"temp2", map[string]uint64{"filtered": 10}},
	} {
		if got := m.sumByLabel("pspf_dropped_total", "pipeline", tc.pipeline, "reason"); !maps.Equal(got, tc.want) {
			t.Errorf("after Unregister and Remove, drops of %s: got %v, want %v", tc.pipeline, got, tc.want)
		}
	}
	m.Unregister("pipeline", "temp")
	m.Unregister("pipeline", "temp2")
	if text := gaugeText(m); text != "" {
		t.Errorf("after unregistering both pipelines: got\n%s\nwant nothing", text)
	}
}

// Label values are read back as metricName quoted them.
func TestLabelValueUnquotes(t *testing.T) {
	for _, v := range []string{"", "plain", `a "quoted" one`, `back\slash`, "two\nlines", `ends with \`, `x",reason="late`} {
		n := metricName("pspf_x", []string{"component", v, "reason", "filtered"})
		if got, ok := labelValue(n, "component"); !ok || got != v {
			t.Errorf("labelValue(%s, component) = %q, %v; want %q", n, got, ok, v)
		}
		if got, _ := labelValue(n, "reason"); got != "filtered" {
			t.Errorf("labelValue(%s, reason) = %q; want filtered", n, got)
		}
		if !hasLabel(n, "component", v) || hasLabel(n, "component", v+"x") {
			t.Errorf("hasLabel(%s, component, %q) wrong", n, v)
		}
	}
	if _, ok := labelValue("pspf_x", "reason"); ok {
		t.Error("a metric without labels has a reason")
	}
}

// BenchmarkSumByLabel reads one pipeline's drops, as every status does
// (once a second while a log moves), among about 200 metrics: those of
// four pipelines with a few components each.
func BenchmarkSumByLabel(b *testing.B) {
	m := NewMetrics()
	for p := range 4 {
		pl := fmt.Sprintf("p%d", p)
		for c := range 5 {
			comp := fmt.Sprintf("c%d", c)
			for _, n := range []string{"pspf_records_in_total", "pspf_records_out_total", "pspf_errors_total", "pspf_batches_total", "pspf_bytes_total", "pspf_retries_total", "pspf_panics_total"} {
				m.Counter(n, "pipeline", pl, "component", comp).Inc()
			}
			m.Gauge("pspf_test_gauge", func() float64 { return 1 }, "pipeline", pl, "component", comp)
			m.Gauge("pspf_test_lag", func() float64 { return 1 }, "pipeline", pl, "component", comp)
		}
		for _, r := range []string{"filtered", "sink_rejected", "late"} {
			m.Counter("pspf_dropped_total", "pipeline", pl, "component", "c0", "reason", r).Inc()
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if got := m.sumByLabel("pspf_dropped_total", "pipeline", "p1", "reason"); len(got) != 3 {
			b.Fatalf("got %v, want 3 reasons", got)
		}
	}
}
