package agent

import "github.com/VictoriaMetrics/metrics"

// Counter is a monotonically increasing count, safe for concurrent use. Inc and
// Add are a single atomic add: cheap enough for the hot path once the counter is
// looked up (look it up at construction, not per record). The zero Counter
// counts, unregistered.
type Counter = metrics.Counter

// Metrics is where a component's counters and gauges are registered: the
// runner hands its registry to every component through Env.Metrics, and
// writes what they count in the Prometheus text format. Components usually
// go through Env.Counter and Env.Gauge, which add the pipeline and component
// labels.
type Metrics interface {
	// Counter returns the counter with the given name and labels, given as
	// pairs of label name and value, created on first use. Calls with the
	// same name and labels return the same counter.
	Counter(name string, labels ...string) *Counter
	// Gauge registers f as the value of the named gauge, read whenever the
	// metrics are written; f must be safe for concurrent use and must not
	// block. A later call with the same name and labels replaces f: a
	// component rebuilt by a reload registers its gauges again, and from
	// then on they read the new component, not the one that was stopped.
	Gauge(name string, f func() float64, labels ...string)
}
