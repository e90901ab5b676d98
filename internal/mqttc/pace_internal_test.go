package mqttc

import (
	"testing"
	"time"
)

// steady feeds p the cycles of a steady stream of rate messages/s read
// with the pace p chooses, for d, and returns the pace then.
func steady(p *readPacer, rate float64, d time.Duration) time.Duration {
	for t := time.Duration(0); t < d; {
		el := p.pace()
		p.observe(int64(rate*el.Seconds()+0.5), el)
		t += el
	}
	return p.pace()
}

// within reports whether got is within frac of want.
func within(got, want time.Duration, frac float64) bool {
	return float64(got) >= float64(want)*(1-frac) && float64(got) <= float64(want)*(1+frac)
}

// TestReadPacerFollowsRate checks the adaptive pace of the MQTT source's
// defaults (batch_size 500, 5 ms to 1 s): a read a second at 100 msg/s,
// about four at 2,000, the 5 ms floor at 200,000, starting at 1 s; and
// that it follows a change of rate either way within a few seconds.
func TestReadPacerFollowsRate(t *testing.T) {
	p := newReadPacer(500, 5*time.Millisecond, time.Second)
	if got := p.pace(); got != time.Second {
		t.Fatalf("pace before any sample %v, want 1s", got)
	}
	if got := steady(&p, 100, 30*time.Second); got != time.Second {
		t.Errorf("pace at 100 msg/s %v, want 1s", got)
	}
	if got := steady(&p, 2000, 20*time.Second); !within(got, 250*time.Millisecond, 0.1) {
		t.Errorf("pace at 2,000 msg/s after 20s %v, want 250ms within 10%%", got)
	}
	if got := steady(&p, 200000, 20*time.Second); got != 5*time.Millisecond {
		t.Errorf("pace at 200,000 msg/s after 20s %v, want the floor, 5ms", got)
	}
	if got := steady(&p, 2000, 20*time.Second); !within(got, 250*time.Millisecond, 0.1) {
		t.Errorf("pace back at 2,000 msg/s after 20s %v, want 250ms within 10%%", got)
	}
	if got := steady(&p, 100, 20*time.Second); got != time.Second {
		t.Errorf("pace back at 100 msg/s after 20s %v, want 1s", got)
	}
}

// TestReadPacerBurstAndGap checks that one burst or one gap moves the
// pace little: at 2,000 msg/s (250 ms), a cycle that brings a hundred
// times the usual messages shortens the next pace to no less than half,
// and a minute without messages (one sample of rate zero) lengthens it to
// no more than 1.5 times; the pace is back within 10 % after 20 s.
func TestReadPacerBurstAndGap(t *testing.T) {
	p := newReadPacer(500, 5*time.Millisecond, time.Second)
	base := steady(&p, 2000, time.Minute)
	if !within(base, 250*time.Millisecond, 0.1) {
		t.Fatalf("pace at 2,000 msg/s %v, want 250ms within 10%%", base)
	}
	el := p.pace()
	p.observe(int64(200000*el.Seconds()), el)
	if got := p.pace(); got < base/2 {
		t.Errorf("pace after one burst of 100x %v, want at least half of %v", got, base)
	}
	if got := steady(&p, 2000, 20*time.Second); !within(got, base, 0.1) {
		t.Errorf("pace 20s after the burst %v, want %v within 10%%", got, base)
	}
	p.observe(0, time.Minute)
	if got := p.pace(); got > base*3/2 {
		t.Errorf("pace after a gap of a minute %v, want at most 1.5 times %v", got, base)
	}
	if got := steady(&p, 2000, 20*time.Second); !within(got, base, 0.1) {
		t.Errorf("pace 20s after the gap %v, want %v within 10%%", got, base)
	}
}

// TestReadPacerAfterIdle checks that an idle hour (a PINGRESP every 15 s,
// each a cycle with no message) leaves the estimate at its floor, so that
// a stream of 2,000 msg/s that comes back is paced for its rate within
// seconds, not after a climb from nothing.
func TestReadPacerAfterIdle(t *testing.T) {
	p := newReadPacer(500, 5*time.Millisecond, time.Second)
	steady(&p, 2000, time.Minute)
	for range 240 {
		p.observe(0, 15*time.Second)
	}
	if got := p.pace(); got != time.Second {
		t.Fatalf("pace after an idle hour %v, want 1s", got)
	}
	if got := steady(&p, 2000, 10*time.Second); !within(got, 250*time.Millisecond, 0.1) {
		t.Errorf("pace 10s after the stream came back %v, want 250ms within 10%%", got)
	}
}

// TestReadPacerFixed checks that without a batch the pace is ReadPace,
// whatever the rate, as a linger the user set asks.
func TestReadPacerFixed(t *testing.T) {
	p := newReadPacer(0, 0, 100*time.Millisecond)
	for _, rate := range []float64{1, 100, 2000, 100000} {
		if got := steady(&p, rate, 10*time.Second); got != 100*time.Millisecond {
			t.Errorf("fixed pace at %v msg/s %v, want 100ms", rate, got)
		}
	}
}
