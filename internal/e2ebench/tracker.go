package e2ebench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Tracker accounts for the sequence numbers of one run: which arrived, how
// often, and how long after they were sent. It is safe for concurrent use.
type Tracker struct {
	mix Mix

	mu         sync.Mutex
	from       uint64 // the first sequence number accounted for
	n          uint64
	seen       []uint8 // arrivals per sequence number, saturating at 255
	delivered  uint64  // distinct expected sequence numbers seen
	dups       uint64
	unexpected uint64
	lat        []int64 // µs, one per first arrival
	prefix     uint64  // every valid sequence number below it has arrived
	first      time.Time
	last       time.Time
}

// NewTracker returns a tracker for sequence numbers [0, n) published with mix.
func NewTracker(n uint64, mix Mix) *Tracker { return NewRangeTracker(0, n, mix) }

// NewRangeTracker returns a tracker for sequence numbers [first, end)
// published with mix.
func NewRangeTracker(first, end uint64, mix Mix) *Tracker {
	n := end - min(first, end)
	return &Tracker{mix: mix, from: first, n: n, seen: make([]uint8, n), lat: make([]int64, 0, n)}
}

// Expected returns how many of the sequence numbers should arrive: the
// valid ones.
func (t *Tracker) Expected() uint64 {
	var e uint64
	for s := t.from; s < t.from+t.n; s++ {
		if t.mix.KindOf(s) == KindValid {
			e++
		}
	}
	return e
}

// Add records the arrival of seq at now, sent at sentUS (Unix µs).
func (t *Tracker) Add(seq uint64, sentUS int64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.first.IsZero() {
		t.first = now
	}
	t.last = now
	if seq < t.from || seq-t.from >= t.n || t.mix.KindOf(seq) != KindValid {
		t.unexpected++
		return
	}
	i := seq - t.from
	if c := t.seen[i]; c > 0 {
		t.dups++
		if c < 255 {
			t.seen[i]++
		}
		return
	}
	t.seen[i] = 1
	t.delivered++
	t.lat = append(t.lat, now.UnixMicro()-sentUS)
}

// AddUnexpected counts a record that carries no sequence number.
func (t *Tracker) AddUnexpected() {
	t.mu.Lock()
	t.unexpected++
	t.mu.Unlock()
}

// AllBelow reports whether every valid sequence number below limit has
// arrived.
func (t *Tracker) AllBelow(limit uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit = min(limit-min(limit, t.from), t.n)
	for t.prefix < limit && (t.seen[t.prefix] > 0 || t.mix.KindOf(t.from+t.prefix) != KindValid) {
		t.prefix++
	}
	return t.prefix >= limit
}

// Delivered returns how many distinct expected sequence numbers arrived.
func (t *Tracker) Delivered() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.delivered
}

// Counts are a run's sequence accounting.
type Counts struct {
	// Expected is the number of valid readings published.
	Expected uint64 `json:"expected"`
	// Delivered is how many of them arrived at least once.
	Delivered uint64 `json:"delivered"`
	// Lost is Expected - Delivered.
	Lost uint64 `json:"lost"`
	// Duplicates counts arrivals beyond the first.
	Duplicates uint64 `json:"duplicates"`
	// Unexpected counts records that should not have arrived: filtered or
	// invalid readings, sequence numbers never sent, values without one.
	Unexpected uint64 `json:"unexpected"`
}

// Result returns the accounting so far, the latency percentiles and the
// times of the first and last arrival.
func (t *Tracker) Result() (Counts, Latency, time.Time, time.Time) {
	exp := t.Expected()
	t.mu.Lock()
	defer t.mu.Unlock()
	c := Counts{Expected: exp, Delivered: t.delivered, Duplicates: t.dups, Unexpected: t.unexpected}
	if exp > t.delivered {
		c.Lost = exp - t.delivered
	}
	return c, Percentiles(t.lat), t.first, t.last
}

// Latency is a distribution of latencies in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Percentiles returns the nearest-rank percentiles (the value at rank
// ceil(q·n)) of us, latencies in microseconds, in milliseconds. It sorts a
// copy; the zero Latency for no samples.
func Percentiles(us []int64) Latency {
	if len(us) == 0 {
		return Latency{}
	}
	s := slices.Clone(us)
	slices.Sort(s)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		i = min(max(i, 0), len(s)-1)
		return float64(s[i]) / 1000
	}
	return Latency{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: float64(s[len(s)-1]) / 1000}
}
