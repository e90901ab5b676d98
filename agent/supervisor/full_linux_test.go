package supervisor

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testkit"
)

// A log that blocks — at max_bytes, or on a full disk (a 1 MiB tmpfs) — is
// not silent: one WARN, blocked_since and blocked_reason in the views (the
// admin API's JSON), seconds_to_cap 0, the pspf_log_blocked and
// pspf_log_full gauges, the disk error in last_error while it lasts; and
// when the destination returns, the log drains, unblocks and says the
// episode ended.
func TestBlockedLogIsVisible(t *testing.T) {
	for _, tc := range []struct {
		reason string
		buffer string
		tmpfs  bool
	}{
		{"max_bytes", "{max_bytes: 1MiB, segment_bytes: 64KiB}", false},
		{"disk_full", "{max_bytes: 64MiB, segment_bytes: 64KiB}", true},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			rec := newRecorder()
			rec.down.Store(true)
			reg := testRegistry(map[string]*recorder{"m": rec})
			file := `sources:
  - simulate: {sensors: 4, rate: 2000, format: fields, shape: steady}
sinks:
  - record: {id: m}
    retry: {initial: 20ms, max: 50ms}
buffer: ` + tc.buffer + "\n"
			var tune func(*Deps)
			if tc.tmpfs {
				mnt := testkit.MountTmpfs(t, "1m")
				tune = func(d *Deps) { d.Config.DataDir = filepath.Join(mnt, "data") }
			}
			h := startHarness(t, reg, map[string]string{"m.yaml": file}, tune)

			h.waitFor("the log to block", func() bool { return !h.view("m").BlockedSince.IsZero() })
			if tc.tmpfs {
				// The free space is read once a second: by then the
				// blocked appends retried many times.
				h.waitFor("the free space", func() bool { return h.view("m").Log.DiskFree < 128<<10 })
			}
			checkBlockedAPI(t, h, tc.reason)
			checkBlockedMetrics(t, h, tc.reason)
			warn := `level=WARN msg="buffer: log full; appends wait until readers free space"`
			if n := strings.Count(h.logs.String(), warn); n != 1 || !strings.Contains(h.logs.String(), "reason="+tc.reason) {
				t.Errorf("got %d WARN lines for the full log, want 1 with reason=%s\n%s", n, tc.reason, h.logs.String())
			}

			rec.down.Store(false)
			// The source goes on at 8000 records/s meanwhile: on a loaded
			// machine the sink takes a while to get ahead of it, and the
			// free space is read once a second.
			agenttest.Eventually(t, 30*time.Second, "the log to unblock", func() bool { return h.view("m").BlockedSince.IsZero() }, h.logs)
			agenttest.Eventually(t, 30*time.Second, "the end of the episode", func() bool { return h.view("m").Log.FullSince.IsZero() }, h.logs)
			v := h.view("m")
			if v.Log.LastError != "" || v.SecondsToCap != nil && *v.SecondsToCap == 0 {
				t.Errorf("after the episode: log last_error %q, seconds_to_cap 0; want none, not 0", v.Log.LastError)
			}
			logs := h.logs.String()
			if n := strings.Count(logs, `msg="buffer: log no longer full"`); n != 1 || strings.Count(logs, warn) != 1 {
				t.Errorf("got %d INFO lines for the end and %d WARN, want 1 and 1\n%s", n, strings.Count(logs, warn), logs)
			}
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			rec.check(t, tc.reason)
		})
	}
}

// checkBlockedAPI checks the views, as the admin API's JSON, of a pipeline
// whose log blocks for reason.
func checkBlockedAPI(t *testing.T, h *harness, reason string) {
	t.Helper()
	out, err := json.Marshal(h.sup.Views())
	if err != nil {
		t.Fatal(err)
	}
	var views []map[string]any
	if err := json.Unmarshal(out, &views); err != nil || len(views) != 1 {
		t.Fatalf("views as JSON: %v\n%s", err, out)
	}
	api := views[0]
	log, _ := api["log"].(map[string]any)
	if api["blocked_reason"] != reason || log["blocked_reason"] != reason || log["full_reason"] != reason {
		t.Errorf("API: blocked_reason %v, log.blocked_reason %v, log.full_reason %v, want %s", api["blocked_reason"], log["blocked_reason"], log["full_reason"], reason)
	}
	since, _ := api["blocked_since"].(string)
	if at, err := time.Parse(time.RFC3339Nano, since); err != nil || time.Since(at) > time.Minute {
		t.Errorf("API: blocked_since %q, want a moment ago", since)
	}
	if s, ok := api["seconds_to_cap"].(float64); !ok || s != 0 {
		t.Errorf("API: seconds_to_cap %v, want 0 while blocked", api["seconds_to_cap"])
	}
	if reason != "disk_full" {
		return
	}
	for _, e := range []any{api["last_error"], log["last_error"]} {
		if s, _ := e.(string); !strings.Contains(s, "no space left on device") {
			t.Errorf("API: last_error %q, want the disk-full error", s)
		}
	}
}

// checkBlockedMetrics checks the metrics of a pipeline whose log blocks
// for reason.
func checkBlockedMetrics(t *testing.T, h *harness, reason string) {
	t.Helper()
	var metrics strings.Builder
	h.sup.d.Metrics.WritePrometheus(&metrics)
	text := metrics.String()
	if got := metricValue(t, text, `pspf_log_blocked{pipeline="m"}`); got != 1 {
		t.Errorf("pspf_log_blocked = %v, want 1", got)
	}
	if got := metricValue(t, text, `pspf_log_full{pipeline="m",reason="`+reason+`"}`); got != 1 {
		t.Errorf("pspf_log_full{reason=%s} = %v, want 1", reason, got)
	}
	if got := metricValue(t, text, `pspf_log_blocked_since_seconds{pipeline="m"}`); time.Since(time.Unix(int64(got), 0)) > time.Minute {
		t.Errorf("pspf_log_blocked_since_seconds = %v, want a moment ago", got)
	}
	if got := metricValue(t, text, `pspf_log_seconds_to_cap{pipeline="m"}`); got != 0 {
		t.Errorf("pspf_log_seconds_to_cap = %v, want 0", got)
	}
}
