package runner

import (
	"bytes"
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
