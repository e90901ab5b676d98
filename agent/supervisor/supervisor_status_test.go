package supervisor

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// metricValue returns the value of the sample named exactly line (name and
// labels) in Prometheus text.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no sample %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("sample %s: %v", series, err)
	}
	return v
}

// fakeClock is a clock that moves only when the test moves it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A known scenario: 400 readings, a filter drops every fourth one, the
// destination is down while the clock (the supervisor's and the
// pipeline's) moves on 90 s. The views (the admin API's status) and the
// metrics must say so, to the second.
func TestMetricsAndStatusKnownScenario(t *testing.T) {
	rec := newRecorder()
	rec.down.Store(true)
	reg := testRegistry(map[string]*recorder{"m": rec})
	const file = `sources:
  - simulate: {sensors: 1, rate: 200, count: 400, format: fields, shape: steady}
operators:
  - filter: {expr: "seq % 4 != 0"}
sinks:
  - record: {id: m}
    retry: {initial: 50ms, max: 100ms}
`
	start := time.Now()
	clock := &fakeClock{now: start}
	h := startHarness(t, reg, map[string]string{"m.yaml": file}, func(d *Deps) { d.Now = clock.Now })
	metrics := func() string {
		var b strings.Builder
		h.sup.d.Metrics.WritePrometheus(&b)
		return b.String()
	}

	// The simulated source paces its readings by the clock from when it
	// connects: one is due at once (filtered), 200 more a second later, the
	// rest by 91 s.
	h.waitFor("the first reading", func() bool {
		v := h.view("m")
		return len(v.Sources) == 1 && v.Sources[0].Records == 1
	})
	clock.Add(time.Second)
	h.waitFor("the sink offline, retrying", func() bool {
		v := h.view("m")
		return len(v.Sinks) == 1 && !v.Sinks[0].OfflineSince.IsZero() && v.Sinks[0].Retries > 0
	})
	if v, want := h.view("m"), start.Add(time.Second); !v.Sinks[0].OfflineSince.Equal(want) {
		t.Errorf("offline_since %v, want the clock's time %v", v.Sinks[0].OfflineSince, want)
	}
	clock.Add(90 * time.Second)
	h.waitFor("the backlog of 300 readings", func() bool { return h.view("m").BacklogRecords == 300 })
	checkOutage(t, h.view("m"), metrics())
	if ok, why := h.sup.Ready(); !ok {
		t.Errorf("not ready (%s) during the outage, want ready", why)
	}

	rec.down.Store(false)
	h.waitFor("300 records delivered", func() bool {
		v := h.view("m")
		return len(v.Sinks) == 1 && v.Sinks[0].Records == 300
	})
	checkRecovered(t, h.view("m"), metrics())

	// An invalid save: counted and shown; the generation stays.
	writeFile(t, filepath.Join(h.dir, "m.yaml"), "sources: [\n")
	h.waitFor("the reload failure", func() bool { return h.view("m").ReloadFailures == 1 })
	if got := metricValue(t, metrics(), `pspf_reload_failures_total{pipeline="m"}`); got != 1 {
		t.Errorf("pspf_reload_failures_total = %v, want 1", got)
	}
	if v := h.view("m"); v.Generation != 1 || !strings.Contains(v.LastReloadError, "invalid YAML") {
		t.Errorf("after an invalid save: generation %d, last_reload_error %q; want 1 kept, invalid YAML", v.Generation, v.LastReloadError)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// checkOutage checks the view and the metrics of the known scenario 90 s
// into the outage.
func checkOutage(t *testing.T, v PipelineView, metrics string) {
	t.Helper()
	if len(v.Sinks) != 1 || v.Sinks[0].Online || v.Sinks[0].OfflineSeconds != 90 {
		t.Fatalf("during the outage: sinks %+v, want one offline for 90s", v.Sinks)
	}
	// The oldest record was appended 90 s ago. Its age counts from the
	// supervisor's sample of the log's end before it, or else from the
	// creation of the log's oldest segment, by the wall clock: shortly
	// after the start, 91 s ago.
	if v.OldestUnsentSeconds < 60 || v.OldestUnsentSeconds > 91 {
		t.Errorf("during the outage: oldest unsent %.2fs, want 60s to 91s", v.OldestUnsentSeconds)
	}
	if off := metricValue(t, metrics, `pspf_sink_offline_seconds{pipeline="m",component="record"}`); off != 90 {
		t.Errorf("pspf_sink_offline_seconds = %v, want 90", off)
	}
	if on := metricValue(t, metrics, `pspf_sink_online{pipeline="m",component="record"}`); on != 0 {
		t.Errorf("pspf_sink_online = %v during the outage, want 0", on)
	}
	const why = "record: write: record sink: destination down"
	if v.Sinks[0].LastError != why || v.LastError != why {
		t.Errorf("during the outage: sink last_error %q, pipeline last_error %q, want %q", v.Sinks[0].LastError, v.LastError, why)
	}
}

// checkRecovered checks the view and the metrics of the known scenario once
// the destination took the backlog.
func checkRecovered(t *testing.T, v PipelineView, metrics string) {
	t.Helper()
	if v.Drops["filtered"] != 100 || !v.Sinks[0].Online || v.Sinks[0].OfflineSeconds != 0 || v.BacklogRecords != 0 {
		t.Errorf("after the outage: drops %v, online %v, offline %.1fs, backlog %d; want filtered=100, online, 0, 0", v.Drops, v.Sinks[0].Online, v.Sinks[0].OfflineSeconds, v.BacklogRecords)
	}
	if v.LastError != "" || v.Sinks[0].LastError != "" || !v.Sinks[0].OfflineSince.IsZero() {
		t.Errorf("after the outage: last_error %q, sink last_error %q, offline_since %v; want all cleared", v.LastError, v.Sinks[0].LastError, v.Sinks[0].OfflineSince)
	}
	if len(v.Operators) != 1 || v.Operators[0].RecordsIn != 400 || v.Operators[0].RecordsOut != 300 {
		t.Errorf("operators %+v, want filter 400 in, 300 out", v.Operators)
	}
	for series, want := range map[string]float64{
		`pspf_dropped_total{pipeline="m",component="filter",reason="filtered"}`: 100,
		`pspf_sink_records_total{pipeline="m",component="record"}`:              300,
		`pspf_sink_online{pipeline="m",component="record"}`:                     1,
		`pspf_pipeline_generation{pipeline="m"}`:                                1,
		`pspf_log_backlog_records{pipeline="m"}`:                                0,
	} {
		if got := metricValue(t, metrics, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// A removed pipeline drains for removed_drain_timeout; what remains stays
// on disk, reported, until `buffer drop` (cmd/pspf-edge tests that it
// refuses under a running agent).
func TestRemovedPipelineKeepsItsBacklogUntilDropped(t *testing.T) {
	rec := newRecorder()
	rec.down.Store(true)
	reg := testRegistry(map[string]*recorder{"r": rec})
	const file = "sources:\n  - simulate: {sensors: 1, rate: 200, format: fields}\nsinks:\n  - record: {id: r}\n    retry: {initial: 50ms, max: 100ms}\n"
	h := startHarness(t, reg, map[string]string{"r.yaml": file}, func(d *Deps) { d.Config.RemovedDrainTimeout = 300 * time.Millisecond })
	h.waitFor("a backlog", func() bool { return h.view("r").BacklogRecords > 50 })
	if err := os.Remove(filepath.Join(h.dir, "r.yaml")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the removal", func() bool { return h.view("r").State == StateStopped })
	v := h.view("r")
	if v.BacklogRecords == 0 {
		t.Errorf("removed pipeline: backlog 0, want what the offline sink did not take")
	}
	// The warning follows the stop: the state can show stopped first.
	h.waitFor("the warning about the records left on disk", func() bool {
		return strings.Contains(h.logs.String(), "stay on disk until `pspf-edge buffer drop`")
	})
	if ok, why := h.sup.Ready(); !ok {
		t.Errorf("not ready after a removal: %s", why)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.data, "pipelines", "r")); err != nil {
		t.Errorf("after the stop: %v, want the removed pipeline's directory kept", err)
	}
}

// SIGHUP restarts every pipeline as a new generation; a change of the agent
// file changes the log level live and says what needs a restart.
func TestSIGHUPAndAgentFileReload(t *testing.T) {
	rec := newRecorder()
	reg := testRegistry(map[string]*recorder{"h": rec})
	root := t.TempDir()
	pdir, agentFile := filepath.Join(root, "pipelines"), filepath.Join(root, "etc", "agent.yaml")
	os.MkdirAll(pdir, 0o755)
	os.MkdirAll(filepath.Dir(agentFile), 0o755)
	writeFile(t, filepath.Join(pdir, "h.yaml"), "sources:\n  - simulate: {format: fields, rate: 50}\nsinks:\n  - record: {id: h}\n")
	agentBody := func(level, dataDir string) string {
		return "data_dir: " + dataDir + "\npipelines_dir: " + pdir + "\nadmin: {address: \"\"}\nreload_debounce: 50ms\nlog: {level: " + level + "}\n"
	}
	writeFile(t, agentFile, agentBody("info", filepath.Join(root, "data")))
	load := func() (runner.AgentConfig, error) { return runner.LoadAgentConfig(agentFile) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var lv *slog.LevelVar
	h := startHarness(t, reg, nil, func(d *Deps) {
		d.Config, d.ConfigFile, d.LoadConfig = cfg, agentFile, load
		lv = d.Level
		if l, err := cfg.Log.SlogLevel(); err == nil {
			lv.Set(l)
		}
	})
	logs := h.logs
	h.waitFor("generation 1", func() bool { return h.view("h").Generation == 1 })

	h.hup <- syscall.SIGHUP
	h.waitFor("generation 2 after SIGHUP", func() bool { v := h.view("h"); return v.Generation == 2 && v.State == StateRunning })

	writeFile(t, agentFile, agentBody("debug", filepath.Join(root, "elsewhere")))
	h.waitFor("the debug level", func() bool { return lv.Level() == slog.LevelDebug })
	h.waitFor("the restart notice", func() bool {
		return strings.Contains(logs.String(), `changed="log.level=debug" restart_needed=data_dir`)
	})
	if got := h.sup.config().DataDir; got != filepath.Join(root, "data") {
		t.Errorf("data_dir changed live to %s, want it kept until a restart", got)
	}
	writeFile(t, agentFile, "log: {level: loud}\n")
	h.waitFor("the invalid agent file", func() bool { return strings.Contains(logs.String(), "agent config invalid") })
	if lv.Level() != slog.LevelDebug {
		t.Errorf("level %v after an invalid agent file, want debug kept", lv.Level())
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	rec.check(t, "h")
}
