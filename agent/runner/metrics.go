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
	// counters indexes the counters by name, then by full name (with
	// labels), for sumByLabel: the status reads a pipeline's drops once a
	// second, and going through every metric of the set for them (a sorted
	// copy of all names, each looked up again) was most of a status.
	counters map[string]map[string]*agent.Counter
}

// NewMetrics returns an empty metrics set.
func NewMetrics() *Metrics {
	return &Metrics{set: metrics.NewSet(), gauges: map[string]*atomic.Pointer[func() float64]{},
		counters: map[string]map[string]*agent.Counter{}}
}

// Counter returns the counter with the given name and labels, given as pairs of
// label name and value, created on first use.
func (m *Metrics) Counter(name string, labels ...string) *agent.Counter {
	n := metricName(name, labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.set.GetOrCreateCounter(n)
	byName := m.counters[name]
	if byName == nil {
		byName = map[string]*agent.Counter{}
		m.counters[name] = byName
	}
	byName[n] = c
	return c
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

// Unregister removes every metric that has the label with exactly value,
// for example everything of a pipeline that was removed (and nothing of a
// pipeline whose name merely begins the same).
func (m *Metrics) Unregister(label, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.set.ListMetricNames() {
		if hasLabel(n, label, value) {
			m.set.UnregisterMetric(n)
			delete(m.gauges, n)
			m.forgetCounterLocked(n)
		}
	}
}

// forgetCounterLocked drops the counter with full name n from the index.
func (m *Metrics) forgetCounterLocked(n string) {
	name, _, _ := strings.Cut(n, "{")
	if byName := m.counters[name]; byName != nil {
		delete(byName, n)
		if len(byName) == 0 {
			delete(m.counters, name)
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

// eachLabel calls fn with the name and the unquoted value of each label of
// a metric name as metricName writes it (`name{a="x",b="y"}`), in order,
// until fn returns false.
func eachLabel(metric string, fn func(name, value string) bool) {
	i := strings.IndexByte(metric, '{')
	if i < 0 {
		return
	}
	s := metric[i+1:]
	var b strings.Builder
	for len(s) > 0 && s[0] != '}' {
		eq := strings.Index(s, `="`) // a label name holds neither = nor "
		if eq < 0 {
			return
		}
		name := s[:eq]
		s = s[eq+2:]
		b.Reset()
		j := 0
		for ; j < len(s) && s[j] != '"'; j++ {
			if s[j] == '\\' && j+1 < len(s) {
				j++
				if s[j] == 'n' {
					b.WriteByte('\n')
					continue
				}
			}
			b.WriteByte(s[j])
		}
		if !fn(name, b.String()) {
			return
		}
		s = strings.TrimPrefix(s[min(j+1, len(s)):], ",")
	}
}

// hasLabel reports whether the metric has the label with exactly value.
func hasLabel(metric, label, value string) bool {
	found := false
	eachLabel(metric, func(n, v string) bool {
		found = n == label && v == value
		return !found
	})
	return found
}

// labelValue returns the value of the metric's label, and whether it has
// one.
func labelValue(metric, label string) (value string, ok bool) {
	eachLabel(metric, func(n, v string) bool {
		if n == label {
			value, ok = v, true
		}
		return !ok
	})
	return value, ok
}

func quoteLabel(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(v) + `"`
}
