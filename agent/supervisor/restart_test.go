package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// A pipeline with a valid config that cannot start (here: its sink's
// constructor fails) makes the supervisor not ready (the admin API's
// /readyz answers 503), naming it, and is started again with backoff until
// it runs; then it is ready again.
func TestReadyzWhileAPipelineIsDown(t *testing.T) {
	in := make(chan agent.Record)
	col := &collector{byID: map[string]agent.Record{}}
	reg := feedRegistry(in, col)
	var broken atomic.Bool
	broken.Store(true)
	type cfg struct{}
	reg.Sinks["fragile"] = agent.Typed[agent.Sink]("test sink that cannot start while broken", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Sink, error) {
		if broken.Load() {
			return nil, errors.New("fragile sink: cannot open its spool")
		}
		return collectSink{col}, nil
	})
	h := startHarness(t, reg, map[string]string{"a.yaml": "sources:\n  - feed: {}\nsinks:\n  - collect: {}\n"}, nil)
	if ok, why := h.sup.Ready(); !ok {
		t.Fatalf("not ready (%s) with one pipeline running, want ready", why)
	}
	writeFile(t, filepath.Join(h.dir, "b.yaml"), "sources:\n  - feed: {}\nsinks:\n  - fragile: {}\n")
	h.waitFor("pipeline b to fail", func() bool { return h.view("b").ReloadFailures > 0 })
	ok, why := h.sup.Ready()
	if ok || !strings.Contains(why, `pipeline "b" is not running`) || !strings.Contains(why, "cannot open its spool") {
		t.Errorf("Ready = %v, %q; want not ready, naming pipeline b and why", ok, why)
	}
	if v := h.view("b"); v.State != StateRestarting {
		t.Errorf("pipeline b: state %q, want %q", v.State, StateRestarting)
	}
	h.waitFor("a second attempt", func() bool { return h.view("b").Restarts >= 1 })
	broken.Store(false)
	h.waitFor("pipeline b to run", func() bool { return h.view("b").State == StateRunning })
	if ok, why := h.sup.Ready(); !ok {
		t.Errorf("not ready (%s), want ready once every pipeline runs", why)
	}
	if v := h.view("b"); v.LastReloadError != "" {
		t.Errorf("pipeline b runs; last_reload_error %q, want none", v.LastReloadError)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// Through the supervisor: a windowed pipeline whose state.db is damaged
// under it fails at its next checkpoint, is started again, moves the file
// aside, rebuilds its state from the log and goes on: the window open
// during the damage closes with every record in it.
func TestStateDamageUnderTheAgent(t *testing.T) {
	in := make(chan agent.Record)
	col := &collector{byID: map[string]agent.Record{}}
	body := windowPipeline("v >= 0", 10*time.Second, 50*time.Millisecond) + "checkpoint: {interval: 100ms}\n"
	h := startHarness(t, feedRegistry(in, col), map[string]string{"w.yaml": body}, nil)
	fed := 0
	feed := func(at time.Duration, v int64) {
		t.Helper()
		select {
		case in <- agent.Record{EventTime: int64(at), Fields: []agent.Field{agent.Int("v", v)}}:
			fed++
		case <-time.After(10 * time.Second):
			t.Fatalf("feed source did not read\n%s", h.logs.String())
		}
	}
	dir := filepath.Join(h.data, "pipelines", "w")
	for i := range int64(3) {
		feed(time.Duration(i+1)*time.Second, i+1)
	}
	h.waitFor("the records in a checkpoint", func() bool {
		_, err := os.Stat(filepath.Join(dir, "state.committed"))
		return err == nil && h.view("w").Input != nil && h.view("w").Input.Backlog == 0 && checkpoints(h) >= 2
	})
	// Zero every page but the two meta pages.
	path := filepath.Join(dir, "state.db")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var meta [8]byte
	hwm := int64(0)
	for _, off := range []int64{16 + 40, 4096 + 16 + 40} {
		if _, err := f.ReadAt(meta[:], off); err != nil {
			t.Fatal(err)
		}
		hwm = max(hwm, int64(binary.NativeEndian.Uint64(meta[:])))
	}
	if _, err := f.WriteAt(make([]byte, (hwm-2)*4096), 2*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	feed(4*time.Second, 4) // changes the state: the next checkpoint meets the damage
	h.waitFor("the pipeline to be started again with its state reset", func() bool {
		v := h.view("w")
		return v.Restarts >= 1 && v.StateResets == 1 && v.State == StateRunning
	})
	feed(25*time.Second, 10) // the watermark passes 10s: [0s, 10s) closes
	h.waitFor("window [0s, 10s)", func() bool { _, ok := col.window(0); return ok })
	r, _ := col.window(0)
	if c, s := r.Field("count"), r.Field("v_sum"); c == nil || s == nil || c.Int != 4 || s.Float != 10 {
		t.Errorf("window [0s, 10s) = %v, want count 4 and v_sum 10 (3 records before the damage, 1 after)", r.Fields)
	}
	feed(35*time.Second, 7) // and the stage goes on: [20s, 30s) closes
	h.waitFor("window [20s, 30s)", func() bool { _, ok := col.window(20 * time.Second); return ok })
	r, _ = col.window(20 * time.Second)
	if c := r.Field("count"); c == nil || c.Int != 1 {
		t.Errorf("window [20s, 30s) = %v, want count 1", r.Fields)
	}
	logs := h.logs.String()
	for _, want := range []string{"pipeline failed; starting it again", "state file damaged: moved aside", "pipeline started again"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if aside, _ := filepath.Glob(path + ".*.damaged"); len(aside) != 1 {
		t.Errorf("moved aside: %v, want one copy", aside)
	}
	if ok, why := h.sup.Ready(); !ok {
		t.Errorf("not ready (%s) after the recovery, want ready", why)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

func checkpoints(h *harness) float64 {
	var b strings.Builder
	h.sup.d.Metrics.WritePrometheus(&b)
	return metricValue(h.t.(*testing.T), b.String(), fmt.Sprintf(`pspf_checkpoints_total{pipeline=%q}`, "w"))
}
