package agent

import (
	"io"
	"strings"

	"github.com/VictoriaMetrics/metrics"
)

// Counter is a monotonically increasing count, safe for concurrent use. Inc and
// Add are a single atomic add: cheap enough for the hot path once the counter is
// looked up (look it up at construction, not per record).
type Counter = metrics.Counter

// Metrics holds the counters and gauges of one agent or one pipeline, and writes
// them in the Prometheus text format. It is not global: each agent makes its own.
type Metrics struct {
	set *metrics.Set
}

// NewMetrics returns an empty metrics set.
func NewMetrics() *Metrics { return &Metrics{set: metrics.NewSet()} }

// Counter returns the counter with the given name and labels, given as pairs of
// label name and value, created on first use.
func (m *Metrics) Counter(name string, labels ...string) *Counter {
	return m.set.GetOrCreateCounter(metricName(name, labels))
}

// Gauge registers f as the value of the named gauge; a second call with the same
// name and labels keeps the first function.
func (m *Metrics) Gauge(name string, f func() float64, labels ...string) {
	m.set.GetOrCreateGauge(metricName(name, labels), f)
}

// Unregister removes every metric whose labels include the given label pair, for
// example everything of a pipeline that was removed.
func (m *Metrics) Unregister(label, value string) {
	needle := label + "=" + quoteLabel(value)
	for _, n := range m.set.ListMetricNames() {
		if strings.Contains(n, needle) {
			m.set.UnregisterMetric(n)
		}
	}
}

// WritePrometheus writes every metric in the Prometheus text exposition format.
func (m *Metrics) WritePrometheus(w io.Writer) { m.set.WritePrometheus(w) }

func metricName(name string, labels []string) string {
	if len(labels) < 2 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteByte('=')
		b.WriteString(quoteLabel(labels[i+1]))
	}
	b.WriteByte('}')
	return b.String()
}

func quoteLabel(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(v) + `"`
}
