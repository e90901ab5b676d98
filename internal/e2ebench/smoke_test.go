package e2ebench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHarnessSmoke runs the whole harness with a tiny load: mosquitto, the
// kfake broker and pspf-edge built from this tree, the ceiling, both
// pipelines, and a short outage. It checks that nothing is lost and that
// the result files are written, not any speed.
func TestHarnessSmoke(t *testing.T) {
	dir := t.TempDir()
	// The agents publish their admin address for pspf-edge status in the
	// user's runtime directory: here, the test's own.
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, pkg := range []string{"./cmd/pspf-edge", "./internal/kafkatest/cmd/kfake-broker"} {
		cmd := exec.Command("go", "build", "-o", dir, pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	var log strings.Builder
	cfg := Config{
		Agents:       []AgentSpec{{Name: "pspf-edge", Cmd: filepath.Join(dir, "pspf-edge") + " run -p {pipeline} --data-dir {data} --admin {admin} --log-level warn"}},
		PipelinesDir: "../../pipelines/bench",
		KafkaBroker:  filepath.Join(dir, "kfake-broker"),
		OutDir:       filepath.Join(dir, "out"),
		Repeats:      1,
		// Enough messages that each run takes several of the kernel's 10 ms
		// CPU ticks at 4-6 µs per record: CPU per record must be > 0.
		MaxQoS0:        8000,
		MaxQoS1:        6000,
		Rates:          []float64{1000},
		RateDuration:   time.Second,
		WindowMessages: 6000,
		Conns:          2,
		Sensors:        10,
		Size:           120,
		Mix:            Mix{Filtered: 0.05, Invalid: 0.05},
		Settle:         3 * time.Second,
		Pause:          100 * time.Millisecond,
		Outage:         Outage{Rate: 500, Duration: 3 * time.Second, Start: time.Second, Down: time.Second},
		Log:            &log,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	if len(res.Ceiling) != 2 || len(res.Runs) != 4 || len(res.Sessions) != 2 || len(res.Outages) != 1 {
		t.Fatalf("got %d ceiling runs, %d runs, %d sessions, %d outages; want 2, 4, 2, 1\nlog:\n%s",
			len(res.Ceiling), len(res.Runs), len(res.Sessions), len(res.Outages), log.String())
	}
	for _, r := range append(res.Ceiling, res.Runs...) {
		if r.Lost != 0 || r.Unexpected != 0 || r.Delivered == 0 || r.Error != "" {
			t.Errorf("%s %s qos %d rate %v: %+v, want all delivered, nothing unexpected", r.Agent, r.Pipeline, r.QoS, r.Rate, r.Counts)
		}
		if r.Pipeline != "ceiling" && (r.CPUPerRecord <= 0 || r.PeakRSS <= 0) {
			t.Errorf("%s qos %d rate %v: cpu %v µs/record, peak %d bytes; want both > 0", r.Pipeline, r.QoS, r.Rate, r.CPUPerRecord, r.PeakRSS)
		}
	}
	o := res.Outages[0]
	if o.Lost != 0 || o.Delivered == 0 || o.UpAt <= o.DownAt || o.DrainSeconds <= 0 || o.PeakBacklogBytes <= 0 || len(o.Samples) < 5 {
		t.Errorf("outage: %+v down %.1f up %.1f drain %.2f s backlog %d, %d samples; want nothing lost, a drain, a backlog",
			o.Counts, o.DownAt, o.UpAt, o.DrainSeconds, o.PeakBacklogBytes, len(o.Samples))
	}
	if err := WriteFiles(cfg.OutDir, res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.json", "table.txt", "outage.svg"} {
		if st, err := os.Stat(filepath.Join(cfg.OutDir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v, want a non-empty file", f, err)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(cfg.OutDir, "outage.svg"))
	parseSVG(t, svg)
	if t.Failed() {
		t.Logf("log:\n%s", log.String())
	}
}
