package runner

import (
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"

	"github.com/pspf/pspf-edge/agent"
)

// Metrics holds the counters and gauges of one agent or one pipeline, and writes
// them in the Prometheus text format. It is not global: each agent makes its own.
type Metrics struct {
	set *metrics.Set

	mu     sync.Mutex
	gauges map[string]*atomic.Pointer[func() float64] // by full name: the function a gauge reads now
}

// NewMetrics returns an empty metrics set.
func NewMetrics() *Metrics {
	return &Metrics{set: metrics.NewSet(), gauges: map[string]*atomic.Pointer[func() float64]{}}
}

// Counter returns the counter with the given name and labels, given as pairs of
// label name and value, created on first use.
func (m *Metrics) Counter(name string, labels ...string) *agent.Counter {
	return m.set.GetOrCreateCounter(metricName(name, labels))
}

// Gauge registers f as the value of the named gauge. A later call with the
// same name and labels replaces the function: a component rebuilt by a reload
// registers its gauges again, and from then on they read the new component,
// not the one that was stopped.
func (m *Metrics) Gauge(name string, f func() float64, labels ...string) {
	n := metricName(name, labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.gauges[n]; p != nil {
		p.Store(&f)
		return
	}
	p := new(atomic.Pointer[func() float64])
	p.Store(&f)
	m.gauges[n] = p
	m.set.GetOrCreateGauge(n, func() float64 { return (*p.Load())() })
}

// Unregister removes every metric whose labels include the given label pair, for
// example everything of a pipeline that was removed.
func (m *Metrics) Unregister(label, value string) {
	needle := label + "=" + quoteLabel(value)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.set.ListMetricNames() {
		if strings.Contains(n, needle) {
			m.set.UnregisterMetric(n)
			delete(m.gauges, n)
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
