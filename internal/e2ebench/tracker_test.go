package e2ebench

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	mix := Mix{Filtered: 0.3, Invalid: 0.2}
	var valid, notValid []uint64
	for s := range uint64(20) {
		if mix.KindOf(s) == KindValid {
			valid = append(valid, s)
		} else {
			notValid = append(notValid, s)
		}
	}
	if len(valid) < 4 || len(notValid) < 1 {
		t.Fatalf("mix gives %d valid and %d others of 20; the test needs 4 and 1", len(valid), len(notValid))
	}
	base := time.Unix(1_700_000_000, 0)
	tr := NewTracker(20, mix)
	// Every valid one but the last arrives, 5 ms after it was sent; the
	// first twice; one filtered one, one beyond the range.
	for _, s := range valid[:len(valid)-1] {
		tr.Add(s, base.UnixMicro(), base.Add(5*time.Millisecond))
	}
	tr.Add(valid[0], base.UnixMicro(), base.Add(time.Second))
	tr.Add(notValid[0], base.UnixMicro(), base.Add(time.Second))
	tr.Add(99, base.UnixMicro(), base.Add(2*time.Second))
	tr.AddUnexpected()

	c, lat, first, last := tr.Result()
	want := Counts{Expected: uint64(len(valid)), Delivered: uint64(len(valid) - 1), Lost: 1, Duplicates: 1, Unexpected: 3}
	if c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	if lat.P50 != 5 || lat.Max != 5 {
		t.Errorf("latency %+v, want 5 ms throughout (duplicates do not count)", lat)
	}
	if !first.Equal(base.Add(5*time.Millisecond)) || !last.Equal(base.Add(2*time.Second)) {
		t.Errorf("first %v last %v, want +5ms and +2s", first, last)
	}
	if !tr.AllBelow(valid[len(valid)-1]) {
		t.Errorf("AllBelow(%d) = false, want true", valid[len(valid)-1])
	}
	if tr.AllBelow(valid[len(valid)-1] + 1) {
		t.Errorf("AllBelow(%d) = true, want false: %d never arrived", valid[len(valid)-1]+1, valid[len(valid)-1])
	}
}

func TestTrackerAddValue(t *testing.T) {
	tr := NewTracker(10, Mix{})
	now := time.Now()
	if warm := tr.AddValue(AppendPayload(nil, WarmBase+3, now.UnixMicro(), KindValid, 0), now); !warm {
		t.Error("a warm-up sequence number is not warm")
	}
	if warm := tr.AddValue(AppendPayload(nil, 4, now.UnixMicro(), KindValid, 0), now); warm {
		t.Error("sequence number 4 is warm")
	}
	tr.AddValue([]byte(`{"temp":1}`), now)
	c, _, _, _ := tr.Result()
	if c.Delivered != 1 || c.Unexpected != 1 || c.Lost != 9 {
		t.Errorf("got %+v, want 1 delivered, 1 unexpected, 9 lost", c)
	}
}

func TestPercentiles(t *testing.T) {
	ms := func(v ...int64) []int64 {
		for i := range v {
			v[i] *= 1000
		}
		return v
	}
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(100-i) * 1000 // reversed: Percentiles sorts
	}
	for _, tc := range []struct {
		name string
		in   []int64
		want Latency
	}{
		{"none", nil, Latency{}},
		{"one", ms(7), Latency{7, 7, 7, 7}},
		{"two", ms(1, 2), Latency{1, 2, 2, 2}},
		{"hundred", hundred, Latency{50, 90, 99, 100}},
		{"ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), Latency{5, 9, 10, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]int64(nil), tc.in...)
			if got := Percentiles(tc.in); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Fatalf("Percentiles changed its input")
				}
			}
		})
	}
}

func TestWindowTally(t *testing.T) {
	mix := Mix{}
	w := NewWindowTally(10, mix)
	now := time.Now()
	for _, v := range []string{
		`{"_key":"s001","count":4,"temp_mean":20.1}`,
		`{"_key":"s002","count":5,"temp_mean":20.1}`,
		`{"_key":"warm","count":1}`,
		`{"_key":"s003","temp_mean":1}`,
	} {
		w.AddValue([]byte(v), now)
	}
	c, outputs, _, _ := w.Result()
	if want := (Counts{Expected: 10, Delivered: 9, Lost: 1, Unexpected: 1}); c != want || outputs != 3 {
		t.Errorf("got %+v and %d outputs, want %+v and 3", c, outputs, want)
	}
	w.AddValue([]byte(`{"_key":"s001","count":3}`), now)
	if c, _, _, _ := w.Result(); c.Duplicates != 2 || c.Lost != 0 || c.Delivered != 10 {
		t.Errorf("got %+v, want 10 delivered, 2 duplicates", c)
	}
}

// TestRangeTracker checks a tracker of [100, 120): its expected count is
// that range's valid sequence numbers, numbers outside it are unexpected,
// and AllBelow works on absolute numbers.
func TestRangeTracker(t *testing.T) {
	mix := Mix{Filtered: 0.3, Invalid: 0.2}
	var valid []uint64
	for s := uint64(100); s < 120; s++ {
		if mix.KindOf(s) == KindValid {
			valid = append(valid, s)
		}
	}
	tr := NewRangeTracker(100, 120, mix)
	if got := tr.Expected(); got != uint64(len(valid)) {
		t.Fatalf("Expected() = %d, want %d", got, len(valid))
	}
	now := time.Now()
	for _, s := range valid {
		tr.Add(s, now.UnixMicro(), now)
	}
	tr.Add(5, now.UnixMicro(), now)
	tr.Add(120, now.UnixMicro(), now)
	if !tr.AllBelow(120) || !tr.AllBelow(50) {
		t.Errorf("AllBelow(120), AllBelow(50) = %v, %v; want true, true", tr.AllBelow(120), tr.AllBelow(50))
	}
	c, _, _, _ := tr.Result()
	if want := (Counts{Expected: uint64(len(valid)), Delivered: uint64(len(valid)), Unexpected: 2}); c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
}
