package e2ebench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// WarmBase is the first sequence number of warm-up and flush messages: the
// counter recognises them and leaves them out of every run.
const WarmBase uint64 = 1 << 40

// warmSensor is the topic level of warm-up and flush messages.
const warmSensor = "warm"

// Accounter takes the records of one run as they arrive.
type Accounter interface {
	// AddValue accounts for one record value that arrived at now; it
	// returns true for warm-up records, which are not part of the run.
	AddValue(v []byte, now time.Time) (warm bool)
}

// AddValue implements Accounter: the value's seq and sent_us fields.
func (t *Tracker) AddValue(v []byte, now time.Time) bool {
	seq, sent, ok := ParseValue(v)
	switch {
	case !ok:
		t.AddUnexpected()
	case seq >= WarmBase:
		return true
	default:
		t.Add(seq, sent, now)
	}
	return false
}

// WindowTally accounts for the outputs of a windowed pipeline: it sums their
// count fields, which should add up to the valid readings published.
type WindowTally struct {
	mix Mix
	n   uint64

	mu      sync.Mutex
	sum     uint64
	outputs uint64
	bad     uint64
	first   time.Time
	last    time.Time
}

// NewWindowTally returns a tally for a run of n readings published with mix.
func NewWindowTally(n uint64, mix Mix) *WindowTally { return &WindowTally{mix: mix, n: n} }

// AddValue implements Accounter: outputs of the warm-up sensor are warm.
func (w *WindowTally) AddValue(v []byte, now time.Time) bool {
	if bytes.Contains(v, []byte(`"`+warmSensor+`"`)) {
		return true
	}
	n, ok := NumberField(v, "count")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first.IsZero() {
		w.first = now
	}
	w.last = now
	w.outputs++
	if !ok || n < 0 {
		w.bad++
		return false
	}
	w.sum += uint64(n)
	return false
}

// Summed returns the readings the outputs so far account for.
func (w *WindowTally) Summed() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sum
}

// Result returns the accounting: Delivered is the sum of the outputs'
// counts, Duplicates what it exceeds the valid readings by, Unexpected the
// outputs without a count; and the outputs, first and last arrival.
func (w *WindowTally) Result() (Counts, uint64, time.Time, time.Time) {
	e := w.mix.Expected(w.n)
	w.mu.Lock()
	defer w.mu.Unlock()
	c := Counts{Expected: e, Delivered: min(w.sum, e), Unexpected: w.bad}
	if w.sum > e {
		c.Duplicates = w.sum - e
	} else {
		c.Lost = e - w.sum
	}
	return c, w.outputs, w.first, w.last
}

// Counter consumes a Kafka topic from its start for as long as it runs and
// hands every record to the current Accounter.
type Counter struct {
	cl *kgo.Client

	mu    sync.Mutex
	acc   Accounter
	warm  chan struct{} // closed at the first warm-up record
	total atomic.Uint64
}

// NewCounter returns a counter of topic on the broker at addr.
func NewCounter(addr, topic string) (*Counter, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addr),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
		// Come back quickly when the broker restarts (the outage run).
		kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }),
		kgo.FetchMaxBytes(16<<20),
		kgo.DisableClientMetrics(), // no KIP-714 pushes competing for the CPU
	)
	if err != nil {
		return nil, fmt.Errorf("e2ebench: counter: %w", err)
	}
	return &Counter{cl: cl, warm: make(chan struct{})}, nil
}

// Set makes acc the accounter of what arrives from now on (nil for none).
func (c *Counter) Set(acc Accounter) {
	c.mu.Lock()
	c.acc = acc
	c.mu.Unlock()
}

// Warm returns a channel closed once a warm-up record has arrived.
func (c *Counter) Warm() <-chan struct{} { return c.warm }

// Total returns how many records arrived in all.
func (c *Counter) Total() uint64 { return c.total.Load() }

// Run consumes until ctx is done, then closes the client.
func (c *Counter) Run(ctx context.Context) error {
	defer c.cl.Close()
	warmed := false
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		c.mu.Lock()
		acc := c.acc
		c.mu.Unlock()
		fs.EachRecord(func(r *kgo.Record) {
			c.total.Add(1)
			var warm bool
			if acc != nil {
				warm = acc.AddValue(r.Value, now)
			} else {
				// Between runs: stragglers of the last one are dropped.
				warm = isWarm(r.Value)
			}
			if warm && !warmed {
				warmed = true
				close(c.warm)
			}
		})
		// Fetch errors (the broker down in the outage run) are retried
		// by the client itself; what matters is what arrives.
	}
}

func isWarm(v []byte) bool {
	if seq, _, ok := ParseValue(v); ok && seq >= WarmBase {
		return true
	}
	return bytes.Contains(v, []byte(`"`+warmSensor+`"`))
}
