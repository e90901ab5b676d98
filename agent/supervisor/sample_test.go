package supervisor

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestSampleBacksOffWhileIdle: backlogs that do not move are sampled less
// and less often, up to idleSampleMax; a move brings sampling back to
// SampleEvery. An idle agent thus wakes for them twice a minute, not every
// second.
func TestSampleBacksOffWhileIdle(t *testing.T) {
	s := &Supervisor{d: Deps{SampleEvery: time.Second}}
	var got []time.Duration
	d := s.d.SampleEvery
	for range 7 {
		d = s.nextSample(d, false)
		got = append(got, d)
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("idle sample intervals: got %v, want %v", got, want)
		}
	}
	if d := s.nextSample(30*time.Second, true); d != time.Second {
		t.Fatalf("after a move: got %v, want 1s", d)
	}
}

// TestTrackerMoved: a sample moves when the log's next sequence or the
// backlog changed, or on the first sample; not when both stayed.
func TestTrackerMoved(t *testing.T) {
	var tr backlogTracker
	now := time.Unix(1000, 0)
	steps := []struct {
		next    uint64
		backlog float64
		want    bool
	}{
		{10, 100, true}, // first
		{10, 100, false},
		{11, 100, true}, // appended
		{11, 0, true},   // delivered
		{11, 0, false},
	}
	for i, st := range steps {
		now = now.Add(time.Second)
		tr.update(now, st.next, st.next, st.backlog)
		if tr.moved != st.want {
			t.Fatalf("step %d (next %d, backlog %v): moved %v, want %v", i, st.next, st.backlog, tr.moved, st.want)
		}
	}
}

// sampleRun drives the loop's two sample cases (Run's select) for dur in a
// synctest bubble while a pipeline appends every period (0: never), with a
// sample that always sees a move. It returns when each sample and each
// append happened, from the start.
func sampleRun(t *testing.T, period, dur time.Duration) (samples, appends []time.Duration) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		s := &Supervisor{d: Deps{SampleEvery: time.Second}, clock: newSampleClock(time.Second)}
		start := time.Now()
		var mu sync.Mutex
		done := make(chan struct{})
		if period > 0 {
			go func() {
				for {
					select {
					case <-done:
						return
					case <-time.After(period):
					}
					mu.Lock()
					appends = append(appends, time.Since(start))
					mu.Unlock()
					s.clock.appended()
				}
			}()
		}
		sample := func() bool {
			samples = append(samples, time.Since(start))
			return true
		}
		every := s.d.SampleEvery
		timer := time.NewTimer(every)
		s.clock.sampled(every, false)
		end := time.After(dur)
	loop:
		for {
			select {
			case <-end:
				break loop
			case <-timer.C:
				every = s.sampleOnTimer(timer, every, sample)
			case <-s.clock.ask:
				every = s.sampleOnAsk(timer, every, sample)
			}
		}
		timer.Stop()
		close(done)
		synctest.Wait()
	})
	return samples, appends
}

// TestSampleRidesOnAppends: while records are appended, backlogs are
// sampled in the wake-up an append brings (at the instant of an append),
// not on a timer of their own, whatever the phase of the records against
// the timer; about once a SampleEvery at high rates, at every append when
// they come up to 2.5 SampleEvery apart. With no appends (a sink
// draining) the timer samples every SampleEvery as before.
func TestSampleRidesOnAppends(t *testing.T) {
	for _, tc := range []struct {
		name     string
		period   time.Duration
		min, max int // samples in the 30 s
	}{
		{"paced reads, just over the interval", 1010 * time.Millisecond, 28, 30},
		{"paced reads, just under the interval", 990 * time.Millisecond, 15, 31},
		{"high rate", 10 * time.Millisecond, 30, 34},
		{"every two seconds", 2 * time.Second, 14, 17},
	} {
		t.Run(tc.name, func(t *testing.T) {
			samples, appends := sampleRun(t, tc.period, 30*time.Second)
			at := map[time.Duration]bool{}
			for _, a := range appends {
				at[a] = true
			}
			warm := max(3*time.Second, 3*tc.period) // the timer falls into step
			var own []time.Duration
			for _, s := range samples {
				if s > warm && !at[s] {
					own = append(own, s)
				}
			}
			if len(own) > 0 {
				t.Errorf("%d samples on a wake-up of their own after the first %v, at %v", len(own), warm, own)
			}
			if n := len(samples); n < tc.min || n > tc.max {
				t.Errorf("%d samples in 30 s, want %d..%d: %v", n, tc.min, tc.max, samples)
			}
			for i := 1; i < len(samples); i++ {
				if gap := samples[i] - samples[i-1]; gap < 900*time.Millisecond || gap > 2500*time.Millisecond {
					t.Errorf("samples %v apart (at %v): want 0.9 s to 2.5 s", gap, samples[i])
				}
			}
		})
	}
	t.Run("no appends", func(t *testing.T) {
		samples, _ := sampleRun(t, 0, 30*time.Second)
		if len(samples) < 29 || len(samples) > 30 {
			t.Errorf("%d samples in 30 s on the timer, want one a second: %v", len(samples), samples)
		}
	})
}
