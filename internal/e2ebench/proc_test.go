package e2ebench

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int64
		ok       bool
	}{
		{"plain", "1234 (pspf-edge) S 1 1234 1234 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 8 0 100 0 0", 3_250_000, true},
		{"name with spaces and parens", "77 (a b) (c)) R 1 77 77 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0", 70_000, true},
		{"short", "77 (x) R 1 2 3", 0, false},
		{"no name", "77 x R", 0, false},
		{"not numbers", "77 (x) R 1 77 77 0 -1 0 0 0 0 0 a b 0 0 20 0 1 0 5 0 0", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.in))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("got %d, %v; want %d, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestParseSchedstat(t *testing.T) {
	for in, want := range map[string]int64{"123456789 5000 42\n": 123456789, "": 0, "x 1 2": 0} {
		if got := parseSchedstat([]byte(in)); got != want {
			t.Errorf("%q: got %d, want %d", in, got, want)
		}
	}
}

// TestThreadsCPU: the threads' sum for this process, after some work of
// its own, is at most two ticks under the stat's count (which is
// truncated to ticks) and at most two ticks and 0.1 s over it (the sum is
// read after the stat, while the test's other threads run).
func TestThreadsCPU(t *testing.T) {
	x := 0
	for i := range 20_000_000 { // some milliseconds of CPU
		x ^= i * i
	}
	_ = x
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	sum := threadsCPU(os.Getpid())
	const tick = 1_000_000 / clockTicks
	if sum <= 0 || sum < ticks-2*tick || sum > ticks+2*tick+100_000 {
		t.Errorf("threads' sum %d µs, stat %d µs: want more than 0, at most two ticks under and two ticks and 0.1 s over", sum, ticks)
	}
}

func TestParseStatusMem(t *testing.T) {
	in := "Name:\tpspf-edge\nVmPeak:\t 1262140 kB\nVmHWM:\t   12040 kB\nVmRSS:\t    5800 kB\nRssAnon:\t    2100 kB\nRssFile:\t    3700 kB\nThreads:\t8\n"
	rss, hwm, anon := parseStatusMem([]byte(in))
	if rss != 5800*1024 || hwm != 12040*1024 || anon != 2100*1024 {
		t.Errorf("got rss %d hwm %d anon %d, want %d, %d and %d", rss, hwm, anon, 5800*1024, 12040*1024, 2100*1024)
	}
	if rss, hwm, anon := parseStatusMem([]byte("Name:\tkthreadd\n")); rss != 0 || hwm != 0 || anon != 0 {
		t.Errorf("a kernel thread: got rss %d hwm %d anon %d, want 0", rss, hwm, anon)
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.HWM < s.RSS || s.Anon <= 0 || s.Anon > s.RSS || s.CPU < 0 {
		t.Errorf("got %+v, want RSS > 0, HWM >= RSS, 0 < Anon <= RSS, CPU >= 0", s)
	}
	if _, err := ReadProc(-1); err == nil {
		t.Error("ReadProc(-1): no error")
	}
}

func TestStatusField(t *testing.T) {
	in := "Name:\tpspf-edge\nVmRSS:\t    5632 kB\nvoluntary_ctxt_switches:\t1234\nwrite_bytes: 40960\n"
	for _, c := range []struct {
		name string
		want int64
	}{{"VmRSS", 5632 << 10}, {"voluntary_ctxt_switches", 1234}, {"write_bytes", 40960}, {"RssFile", 0}} {
		if got := statusField([]byte(in), c.name); got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, got, c.want)
		}
	}
}

// TestReadActivity reads this test process: its threads have slept.
func TestReadActivity(t *testing.T) {
	a, err := ReadActivity(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a.CPU < 0 || a.Wakeups <= 0 || a.WriteBytes < 0 {
		t.Fatalf("got %+v, want wake-ups > 0, CPU and write bytes >= 0", a)
	}
}
