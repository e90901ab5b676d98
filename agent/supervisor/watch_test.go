package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// hammer appends to path about every 2 ms (~500 writes/s) until stop is
// closed, like a file sink's output or a log beside agent.yaml.
func hammer(t *testing.T, path string, stop <-chan struct{}, wg *sync.WaitGroup) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		defer f.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				fmt.Fprintf(f, "{\"line\":%d}\n", i)
			}
		}
	})
}

// Writes to other files in the watched directory never delay the reload of
// a pipeline file: with two files written ~500 times a second beside it,
// every save of the pipeline is applied, through every way of saving, with
// no safety rescan to fall back on.
func TestUnrelatedWritesDoNotDelayReloads(t *testing.T) {
	rec := newRecorder()
	// The default debounce: the landed watcher restarted it at every write
	// in the directory, and applied a save only when the writers happened
	// to pause for that long.
	h := startHarness(t, testRegistry(map[string]*recorder{"a": rec}), nil, func(d *Deps) { d.Config.ReloadDebounce = 200 * time.Millisecond })
	saveTempRename(t, h.dir, "a.yaml", reloadedPipeline(0, 0), 0)
	h.waitFor("pipeline a", func() bool { return h.view("a").State == StateRunning })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hammer(t, filepath.Join(h.dir, "out.ndjson"), stop, &wg)
	hammer(t, filepath.Join(h.dir, "agent.log"), stop, &wg)
	defer func() { close(stop); wg.Wait() }()

	gen := h.view("a").Generation
	for step := 1; step <= 12; step++ {
		p := savePatterns[step%len(savePatterns)]
		p.save(t, h.dir, "a.yaml", reloadedPipeline(step, step), step)
		gen++
		h.waitFor(fmt.Sprintf("save %d (%s) applied under unrelated writes: generation %d", step, p.name, gen), func() bool {
			v := h.view("a")
			return v.Generation == gen && v.State == StateRunning
		})
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	rec.check(t, "a")
}

func TestConfigPaths(t *testing.T) {
	inDir := configPaths("/etc/pspf/pipelines/", true, "/etc/pspf/agent.yaml")
	inFile := configPaths("/srv/one.yaml", false, "")
	for _, tt := range []struct {
		rel  func(string) bool
		path string
		want bool
	}{
		{inDir, "/etc/pspf/pipelines/temp.yaml", true},
		{inDir, "/etc/pspf/pipelines/temp.yml", true},
		{inDir, "/etc/pspf/pipelines/.temp.yaml.swp", false},
		{inDir, "/etc/pspf/pipelines/temp.yaml~", false},
		{inDir, "/etc/pspf/pipelines/out.ndjson", false},
		{inDir, "/etc/pspf/pipelines/..data", true},
		{inDir, "/etc/pspf/pipelines/..2026_11_28_0001", false},
		{inDir, "/etc/pspf/agent.yaml", true},
		{inDir, "/etc/pspf/agent.log", false},
		{inDir, "/etc/pspf/other.yaml", false},
		{inDir, "/etc/pspf/..data", true},
		{inFile, "/srv/one.yaml", true},
		{inFile, "/srv/two.yaml", false},
		{inFile, "/srv/..data", true},
	} {
		if got := tt.rel(tt.path); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.path, got, tt.want)
		}
	}
}

// Each file has its own debounce: one written without pause never holds
// back the change of another.
func TestWatcherDebouncesEachFile(t *testing.T) {
	dir := t.TempDir()
	w, err := newDirWatcher(100*time.Millisecond, slog.New(slog.DiscardHandler), func(string) bool { return true }, dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx) })
	stop := make(chan struct{})
	hammer(t, filepath.Join(dir, "busy.yaml"), stop, &wg)
	defer func() { close(stop); cancel(); wg.Wait() }()
	for i := range 5 {
		writeFile(t, filepath.Join(dir, "quiet.yaml"), fmt.Sprint(i))
		select {
		case <-w.Changed():
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d of quiet.yaml not signalled in 10s while busy.yaml is written", i)
		}
	}
}
