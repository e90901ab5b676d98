package mqttc

import "time"

// paceTau is the time constant of readPacer's rate estimate: a change of
// the message rate shows in the pace within a few seconds.
const paceTau = 2 * time.Second

// paceMaxWeight is the most one sample moves readPacer's estimate toward
// itself, however long it lasted: a gap of a minute is one sample of rate
// zero, and takes the estimate down by a quarter, not to nothing.
const paceMaxWeight = 0.25

// paceMaxRise is how far above the estimate a sample counts: one burst of
// a hundred times the usual rate raises the estimate by at most
// paceMaxWeight*(paceMaxRise-1), three quarters, not twenty-five times.
const paceMaxRise = 4

// readPacer chooses how long a paced read pauses (Options.ReadPaceBatch):
// about the time batch messages take to arrive at the rate it estimates,
// within [lo, hi]. With batch 0 the pause is hi, fixed (Options.ReadPace
// alone). The estimate is an average of the rates seen between two
// drained reads (each a pause and what arrived in it), weighted by their
// length over paceTau, at most paceMaxWeight each, and with a sample more
// than paceMaxRise times the estimate taken as that: neither one burst
// nor one gap swings the pace far. It never goes below batch/hi, the rate
// at which the pace is hi anyway, so that it starts there (the pace is hi
// until the rate is known, as with a fixed ReadPace) and a stream that
// comes back after an idle hour is paced for its rate within seconds.
type readPacer struct {
	batch  float64
	lo, hi time.Duration
	rate   float64 // messages per second, at least floor
	floor  float64 // batch/hi
}

// newReadPacer returns a pacer for about batch messages per read, pausing
// between lo and hi (hi alone when batch is 0).
func newReadPacer(batch int, lo, hi time.Duration) readPacer {
	p := readPacer{batch: float64(batch), lo: min(lo, hi), hi: hi}
	if batch > 0 && hi > 0 {
		p.floor = p.batch / hi.Seconds()
	}
	p.rate = p.floor
	return p
}

// observe adds a sample: n messages handed on in el, from one drained read
// to the next.
func (p *readPacer) observe(n int64, el time.Duration) {
	if p.batch == 0 || el <= 0 {
		return
	}
	sample := min(float64(n)/el.Seconds(), p.rate*paceMaxRise)
	w := min(float64(el)/float64(paceTau), paceMaxWeight)
	p.rate = max(p.rate+w*(sample-p.rate), p.floor)
}

// pace is how long the next paced read pauses, before pauseFor's guard.
func (p *readPacer) pace() time.Duration {
	if p.batch == 0 || p.rate <= p.floor {
		return p.hi
	}
	return min(max(time.Duration(p.batch/p.rate*float64(time.Second)), p.lo), p.hi)
}

// pauseFor is how long a read pauses (see Options.ReadPace): pace, or less
// so that the messages expected meanwhile, at the pace of the last burst
// (n messages in el nanoseconds, when known), stay within room, the
// messages the broker may still send before it waits for our acks (half
// of Receive Maximum, less those awaiting their ack). A pause that would
// let the broker's window fill would hold the flow back for its rest;
// with no room left it is not taken (0).
func pauseFor(pace time.Duration, room, n, el int64, known bool) time.Duration {
	if room <= 0 {
		return 0
	}
	// Clamped, the products stay far within int64 (pace is at most
	// linger's maximum, 1 s, room under 2^16).
	n, el = min(n, 1<<30), min(el, 1<<40)
	if !known || n <= 0 || el <= 0 || n*int64(pace) <= room*el {
		return pace
	}
	return time.Duration(room * el / n)
}
