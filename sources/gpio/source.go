// Package gpio is a source that watches GPIO input pins through periph.io:
// debounced edges (switches, alarms), levels polled at an interval, and
// pulse counts per interval (flow meters, anemometers). Each record carries
// the pin, the value, the edge and the time; its key is the pin.
//
// The agent only reads pins: it never drives an output line (see README).
package gpio

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"

	"github.com/pspf/pspf-edge/agent"
)

// lookupFunc finds a pin: by line name, or by chip and line. The real one
// uses periph's host drivers (the Linux GPIO character device); tests hand
// out periph's gpiotest pins.
type lookupFunc func(p PinConfig) (pgpio.PinIO, error)

// Source is the GPIO source. Build it with New.
type Source struct {
	cfg    Config
	env    agent.Env
	log    *slog.Logger
	lookup lookupFunc

	pins   []pgpio.PinIO
	events chan agent.Record
	done   chan struct{}
	wg     sync.WaitGroup
	timer  *time.Timer

	// unacked bounds the unacked batches: a pin cannot replay the past, so
	// a nacked batch is kept in memory and handed out again by the next Read.
	unacked   *agent.Unacked
	closeOnce sync.Once

	records, debounced, queueFull *agent.Counter
}

// New returns a GPIO source. It starts no goroutines: Connect does.
func New(cfg Config, env agent.Env) *Source { return newSource(cfg, env, lookupHost) }

func newSource(cfg Config, env agent.Env, lookup lookupFunc) *Source {
	env = env.WithDefaults()
	cfg.Pins = append([]PinConfig(nil), cfg.Pins...)
	for i := range cfg.Pins {
		cfg.Pins[i].fill()
	}
	return &Source{
		cfg: cfg, env: env, log: env.Logger, lookup: lookup,
		events:  make(chan agent.Record, cfg.Queue),
		done:    make(chan struct{}),
		unacked: agent.NewUnacked(cfg.MaxUnacked, env.Counter("pspf_gpio_redelivered_total")),

		records:   env.Counter("pspf_gpio_records_total"),
		debounced: env.Counter("pspf_gpio_dropped_total", "reason", "debounced"),
		queueFull: env.Counter("pspf_gpio_dropped_total", "reason", "queue_full"),
	}
}

var edges = map[string]pgpio.Edge{"rising": pgpio.RisingEdge, "falling": pgpio.FallingEdge, "both": pgpio.BothEdges}
var pulls = map[string]pgpio.Pull{"up": pgpio.PullUp, "down": pgpio.PullDown, "none": pgpio.PullNoChange}

// Connect finds and configures every pin, then starts one goroutine per pin.
// A pin that does not exist, or cannot be made an input, is an error that
// names it; nothing is started then.
func (s *Source) Connect(context.Context) error {
	if s.pins != nil {
		return nil
	}
	pins := make([]pgpio.PinIO, len(s.cfg.Pins))
	for i, pc := range s.cfg.Pins {
		p, err := s.lookup(pc)
		if err != nil {
			return fmt.Errorf("gpio source: pin %q: %w", pc.Alias, err)
		}
		edge := pgpio.NoEdge
		if pc.Mode != "level" {
			edge = edges[pc.Edge]
			if pc.Debounce > 0 && pc.Mode == "edge" {
				// Debouncing needs to see both transitions to know where the
				// line settled; the edge filter is applied afterwards.
				edge = pgpio.BothEdges
			}
		}
		if err := p.In(pulls[pc.Pull], edge); err != nil {
			return fmt.Errorf("gpio source: pin %q: set as input: %w", pc.Alias, err)
		}
		pins[i] = p
	}
	s.pins = pins
	for i, pc := range s.cfg.Pins {
		w := &watcher{s: s, cfg: pc, pin: pins[i]}
		switch pc.Mode {
		case "edge":
			s.wg.Go(w.edges)
		case "level":
			s.wg.Go(w.levels)
		case "counter":
			s.wg.Go(w.counter)
		}
	}
	s.log.Info("gpio source watching pins", "pins", len(pins))
	return nil
}

// emit queues a record; a full queue drops it and counts it.
func (s *Source) emit(r agent.Record) {
	select {
	case s.events <- r:
	default:
		s.queueFull.Inc()
	}
}

// Read waits for a record, then gathers more for up to linger or
// batch_size. It blocks while max_unacked batches are unacked; meanwhile
// records wait in the queue, and beyond it are dropped and counted.
func (s *Source) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	if b, ack, err := s.unacked.Acquire(ctx); b != nil || err != nil {
		return b, ack, err
	}
	var recs []agent.Record
	select {
	case r := <-s.events:
		recs = append(recs, r)
	case <-ctx.Done():
		s.unacked.Release()
		return nil, nil, ctx.Err()
	case <-s.done:
		s.unacked.Release()
		return nil, nil, fmt.Errorf("gpio source: %w", agent.ErrStopped)
	}
	if s.timer == nil {
		s.timer = time.NewTimer(s.cfg.Linger)
	} else {
		s.timer.Reset(s.cfg.Linger)
	}
	defer s.timer.Stop()
	for len(recs) < s.cfg.BatchSize {
		select {
		case r := <-s.events:
			recs = append(recs, r)
			continue
		default:
		}
		if s.cfg.Linger <= 0 {
			break
		}
		select {
		case r := <-s.events:
			recs = append(recs, r)
			continue
		case <-s.timer.C:
		case <-ctx.Done():
		}
		break
	}
	s.records.Add(len(recs))
	return recs, s.unacked.Ack(recs), nil
}

// Close stops the pin goroutines (Halt interrupts a pending edge wait) and
// waits for them. The pins are left as inputs. Close is idempotent.
func (s *Source) Close(context.Context) error {
	s.closeOnce.Do(func() {
		close(s.done)
		for _, p := range s.pins {
			_ = p.Halt()
		}
		s.wg.Wait()
	})
	return nil
}

// watcher is one pin's goroutine.
type watcher struct {
	s   *Source
	cfg PinConfig
	pin pgpio.PinIO
}

// poll is how long one edge wait lasts before the watcher checks for Close.
const poll = 100 * time.Millisecond

func (w *watcher) stopped() bool {
	select {
	case <-w.s.done:
		return true
	default:
		return false
	}
}

func (w *watcher) record(at time.Time, fields ...agent.Field) agent.Record {
	return agent.Record{Key: w.cfg.Alias, Source: w.s.env.Component, EventTime: at.UnixNano(), RecvTime: at.UnixNano(),
		Fields: append([]agent.Field{agent.String("pin", w.cfg.Alias)}, fields...)}
}

// edges makes a record per change. With a debounce, a change counts once
// the line has had no edge for the debounce time, with the level it settled
// at and the time of its first edge; bounces that end where they started are
// dropped and counted (reason debounced). Times are when the goroutine woke
// up: periph drops the kernel's event timestamp (README, Timing).
func (w *watcher) edges() {
	last := w.pin.Read()
	want := edges[w.cfg.Edge]
	for !w.stopped() {
		if !w.pin.WaitForEdge(poll) {
			continue
		}
		at := w.s.env.Now()
		if w.cfg.Debounce > 0 {
			for w.pin.WaitForEdge(w.cfg.Debounce) {
				if w.stopped() {
					return
				}
			}
		}
		level := w.pin.Read()
		if level == last && w.cfg.Debounce > 0 {
			w.s.debounced.Inc()
			continue
		}
		last = level
		edge, name := pgpio.FallingEdge, "falling"
		if level == pgpio.High {
			edge, name = pgpio.RisingEdge, "rising"
		}
		if want != pgpio.BothEdges && want != edge {
			continue
		}
		w.s.emit(w.record(at, agent.Int("value", levelInt(level)), agent.String("edge", name)))
	}
}

// levels makes a record with the line's level every interval.
func (w *watcher) levels() {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-w.s.done:
			return
		case <-t.C:
			w.s.emit(w.record(w.s.env.Now(), agent.Int("value", levelInt(w.pin.Read()))))
		}
	}
}

// counter counts edges (debounced: an edge within debounce of the last
// counted one is a bounce) and makes a record with the count every interval.
// "Within" is judged by wake-up times, as periph gives no event timestamp:
// edges queued while the goroutine was late are read back to back, and real
// pulses among them count as bounces (README, Timing).
func (w *watcher) counter() {
	var count atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		var lastAt time.Time
		for !w.stopped() {
			if !w.pin.WaitForEdge(poll) {
				continue
			}
			now := w.s.env.Now()
			if w.cfg.Debounce > 0 && !lastAt.IsZero() && now.Sub(lastAt) < w.cfg.Debounce {
				w.s.debounced.Inc()
				continue
			}
			lastAt = now
			count.Add(1)
		}
	})
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	start := w.s.env.Now()
	for {
		select {
		case <-w.s.done:
			return
		case <-t.C:
			now := w.s.env.Now()
			n := count.Swap(0)
			w.s.emit(w.record(now, agent.Int("count", n), agent.Float("per_second", float64(n)/now.Sub(start).Seconds()),
				agent.Int("interval_ms", now.Sub(start).Milliseconds())))
			start = now
		}
	}
}

func levelInt(l pgpio.Level) int64 {
	if l == pgpio.High {
		return 1
	}
	return 0
}

var _ agent.Source = (*Source)(nil)
