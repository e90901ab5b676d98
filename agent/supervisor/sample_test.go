package supervisor

import (
	"testing"
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
