package e2ebench

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// floodPeakBound is the most resident memory the agent may take under the
// flood of 250 KB messages, Kafka up or down: issue 20's bound. The
// benchmark (make bench-flood) measures well below it; the margin is for a
// busy machine, where the collector runs late.
const floodPeakBound = 40 << 20

// TestFloodMemory runs the agent built from this tree against mosquitto and
// the kfake broker, floods it with 1,000 messages of 250 KB at QoS 1 with
// Kafka up, then with Kafka stopped, then a mixed flood, and checks that
// nothing is lost, that its peak RSS stays within floodPeakBound, and that
// its memory comes back near its idle level after each burst. It takes
// about two minutes.
func TestFloodMemory(t *testing.T) {
	dir := t.TempDir()
	for _, pkg := range []string{"./cmd/pspf-edge", "./internal/kafkatest/cmd/kfake-broker"} {
		cmd := exec.Command("go", "build", "-o", dir, pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	var log strings.Builder
	cfg := DefaultFloodConfig()
	cfg.Agent = AgentSpec{Name: "pspf-edge", Cmd: filepath.Join(dir, "pspf-edge") + " run -p {pipeline} --data-dir {data} --admin {admin} --log-level warn"}
	cfg.PipelinesDir = "../../pipelines/bench"
	cfg.KafkaBroker = filepath.Join(dir, "kfake-broker")
	cfg.Dir = filepath.Join(dir, "flood")
	cfg.Log = &log
	// Back near idle: what a burst may leave behind is bounded buffers
	// (the log's write buffer, the readers' frame buffers, the Kafka
	// client's request buffer) and the pages of code it ran; the heap it
	// took (hundreds of MB before the byte budgets) must be gone.
	cfg.Slack = 8 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Flood(ctx, cfg)
	var table strings.Builder
	WriteFloodTable(&table, res)
	t.Logf("\n%s", table.String())
	if err != nil {
		t.Fatalf("Flood: %v\nlog:\n%s", err, log.String())
	}
	for _, name := range []string{"kafka-up", "kafka-down", "drain", "mixed"} {
		p := res.Phase(name)
		if p.Name == "" {
			t.Errorf("phase %s missing", name)
			continue
		}
		if p.Lost != 0 || p.Unexpected != 0 {
			t.Errorf("%s: lost %d, unexpected %d; want 0, 0", name, p.Lost, p.Unexpected)
		}
		if p.PeakRSS > floodPeakBound {
			t.Errorf("%s: peak RSS %.1f MB, want at most %.0f MB", name, mb(p.PeakRSS), mb(floodPeakBound))
		}
		if !p.Settled {
			t.Errorf("%s: %.0f s after the burst RSS is %.1f MB and heap %.1f MB; want within %.0f MB of idle (%.1f MB, %.1f MB)",
				name, p.SettleSeconds, mb(p.AfterRSS), mb(p.AfterHeap), mb(cfg.Slack), mb(res.IdleRSS), mb(res.IdleHeap))
		}
	}
}
