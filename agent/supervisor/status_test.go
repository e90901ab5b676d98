package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// seconds_to_cap counts with the room left under the cap or on the disk,
// whichever is less, and is 0 at the cap or while a log is full.
func TestSecondsToCap(t *testing.T) {
	const mib = 1 << 20
	now := time.Now()
	log := func(disk, free int64) runner.LogStatus {
		return runner.LogStatus{MaxBytes: 256 * mib, DiskBytes: disk, DiskFree: free, Backlog: 1000}
	}
	full := func(ls runner.LogStatus) runner.LogStatus { ls.FullSince, ls.FullReason = now, "max_bytes"; return ls }
	for _, tc := range []struct {
		name string
		st   runner.Status
		rate float64
		want float64 // -1: null
	}{
		{"cap nearer", runner.Status{Log: log(200*mib, 1000*mib)}, mib, 56},
		{"disk nearer", runner.Status{Log: log(10*mib, 20*mib)}, mib, 20},
		{"free space unknown", runner.Status{Log: log(10*mib, -1)}, mib, 246},
		{"at the cap", runner.Status{Log: log(256*mib, 1000*mib)}, mib, 0},
		{"99.99% of the cap, blocked", runner.Status{Log: full(log(256*mib-26000, 1000*mib))}, 0.01, 0},
		{"disk full, blocked", runner.Status{Log: full(log(10*mib, 0))}, 0.01, 0},
		{"no room on disk", runner.Status{Log: log(10*mib, 0)}, mib, 0},
		{"input log full", runner.Status{Log: log(10*mib, 1000*mib), Input: &runner.LogStatus{FullSince: now}}, mib, 0},
		{"not growing", runner.Status{Log: log(10*mib, 1000*mib)}, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := secondsToCap(tc.st, tc.rate)
			switch {
			case tc.want < 0 && got != nil:
				t.Fatalf("got %v s, want null", *got)
			case tc.want >= 0 && (got == nil || *got != tc.want):
				t.Fatalf("got %v, want %v s", got, tc.want)
			}
		})
	}
}

// Labels, the fleet section and the runtime's settings are read at start:
// a change of any is reported as needing a restart, and nothing else.
func TestRestartNeededFleet(t *testing.T) {
	parse := func(y string) runner.AgentConfig {
		cfg := runner.DefaultAgentConfig()
		n := agent.ParseConfig("agent.yaml", []byte(y), func(string) (string, bool) { return "", false }, nil)
		n.Decode(&cfg)
		if errs := n.Errors(); errs != nil {
			t.Fatal(errs)
		}
		return cfg
	}
	a := parse("labels: {site: p1}\nfleet: {channel: mqtt}\n")
	for _, c := range []struct {
		y    string
		want string
	}{
		{"labels: {site: p1}\nfleet: {channel: mqtt}\n", ""},
		{"labels: {site: p2}\nfleet: {channel: mqtt}\n", "labels"},
		{"labels: {site: p1}\nfleet: {channel: kafka}\n", "fleet"},
		{"labels: {site: p1}\nfleet: {channel: mqtt}\nmax_procs: 2\ntimer_slack: 5ms\n", "max_procs,timer_slack"},
	} {
		if got := strings.Join(restartNeeded(a, parse(c.y)), ","); got != c.want {
			t.Errorf("%q: got %q, want %q", c.y, got, c.want)
		}
	}
}
