package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/wait"
	"github.com/pspf/pspf-edge/operators/fields"
	"github.com/pspf/pspf-edge/operators/filter"
	"github.com/pspf/pspf-edge/operators/mapop"
	"github.com/pspf/pspf-edge/operators/window"
	"github.com/pspf/pspf-edge/sinks/console"
	httpsink "github.com/pspf/pspf-edge/sinks/http"
	"github.com/pspf/pspf-edge/sources/mqtt"
	"github.com/pspf/pspf-edge/sources/simulate"
)

// recorder is what the test sink "record" delivers to; it outlives the
// pipeline generations, like a real destination.
type recorder struct {
	mu      sync.Mutex
	logSeqs map[uint64]int           // log sequence -> deliveries
	bySrc   map[int64]map[int64]bool // config tag -> simulate seq seen
	arrival []time.Time              // of every batch
	down    atomic.Bool              // Write fails while set
	writes  atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{logSeqs: map[uint64]int{}, bySrc: map[int64]map[int64]bool{}}
}

type recordSink struct{ r *recorder }

func (s recordSink) Connect(context.Context) error { return nil }
func (s recordSink) Close(context.Context) error   { return nil }

func (s recordSink) Write(_ context.Context, recs []agent.Record) error {
	s.r.writes.Add(1)
	if s.r.down.Load() {
		return errors.New("record sink: destination down")
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.r.arrival = append(s.r.arrival, time.Now())
	for _, rec := range recs {
		s.r.logSeqs[rec.Seq]++
		var tag, seq int64 = -1, -1
		for _, f := range rec.Fields {
			switch f.Name {
			case "cfg":
				tag = f.Int
			case "seq":
				seq = f.Int
			}
		}
		if s.r.bySrc[tag] == nil {
			s.r.bySrc[tag] = map[int64]bool{}
		}
		s.r.bySrc[tag][seq] = true
	}
	return nil
}

// check reports lost records: log sequences 1..max not delivered, and
// simulate sequences missing inside each config tag's run.
func (r *recorder) check(t *testing.T, name string) (records int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var last uint64
	for s := range r.logSeqs {
		last = max(last, s)
	}
	lost := 0
	for s := uint64(1); s <= last; s++ {
		if r.logSeqs[s] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%s: %d of %d log sequences never delivered, want 0", name, lost, last)
	}
	for tag, seqs := range r.bySrc {
		var hi int64
		for s := range seqs {
			hi = max(hi, s)
		}
		if gap := int(hi+1) - len(seqs); gap != 0 {
			t.Errorf("%s: config %d: %d simulate readings missing in 0..%d, want 0", name, tag, gap, hi)
		}
	}
	return int(last)
}

// maxGap is the longest time between two deliveries after from.
func (r *recorder) maxGap(from time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gap time.Duration
	prev := from
	for _, a := range r.arrival {
		if a.Before(from) {
			continue
		}
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return gap
}

// pluginRegistry has the connectors the tests' pipelines name, registered
// under the names the binary gives them.
func pluginRegistry() *runner.Registry {
	r := runner.NewRegistry()
	r.Sources["simulate"] = simulate.Factory()
	r.Sources["mqtt"] = mqtt.Factory()
	r.Operators["filter"] = filter.Factory()
	r.Operators["map"] = mapop.Factory()
	r.Operators["fields"] = fields.Factory()
	r.Operators["window"] = window.Factory()
	r.Sinks["console"] = console.Factory()
	r.Sinks["http"] = httpsink.Factory()
	return r
}

// testRegistry is pluginRegistry plus the "record" sink, whose `id` picks
// a recorder.
func testRegistry(recs map[string]*recorder) *runner.Registry {
	reg := pluginRegistry()
	type cfg struct {
		ID string `yaml:"id" doc:"recorder"`
	}
	reg.Sinks["record"] = agent.Typed[agent.Sink]("test recorder", func() *cfg { return &cfg{} }, func(c *cfg, _ agent.Env) (agent.Sink, error) {
		r := recs[c.ID]
		if r == nil {
			return nil, fmt.Errorf("record sink: no recorder %q", c.ID)
		}
		return recordSink{r}, nil
	})
	return reg
}

// harness runs a supervisor on temporary directories.
type harness struct {
	t      testing.TB
	dir    string // pipelines
	data   string
	sup    *Supervisor
	cancel context.CancelFunc
	done   chan error
	hup    chan os.Signal
	logs   *agenttest.LogBuffer
}

// startHarness starts a supervisor of the pipeline files (name to content)
// with reg, tuned by tune, and waits for its first sync. It watches no
// agent file and polls nothing, unless tune says otherwise.
func startHarness(t testing.TB, reg *runner.Registry, files map[string]string, tune func(*Deps)) *harness {
	t.Helper()
	root := t.TempDir()
	h := &harness{t: t, dir: filepath.Join(root, "pipelines"), data: filepath.Join(root, "data"), done: make(chan error, 1),
		hup: make(chan os.Signal, 1), logs: &agenttest.LogBuffer{}}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		writeFile(t, filepath.Join(h.dir, name), body)
	}
	d := Deps{Config: runner.DefaultAgentConfig(), Registry: reg, Metrics: runner.NewMetrics(), Level: new(slog.LevelVar)}
	d.Config.DataDir, d.Config.PipelinesDir, d.Config.Admin.Address = h.data, h.dir, ""
	d.Config.ReloadDebounce = 50 * time.Millisecond
	d.Config.ShutdownTimeout = 10 * time.Second
	if tune != nil {
		tune(&d)
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: d.Level}))
	}
	h.sup = New(d)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.sup.Run(ctx, h.hup) }()
	h.waitFor("the first sync", func() bool {
		select {
		case err := <-h.done:
			t.Fatalf("supervisor ended at start: %v\n%s", err, h.logs.String())
		default:
		}
		ok, _ := h.sup.Ready()
		return ok
	})
	return h
}

// stop stops the supervisor (draining) and returns its error.
func (h *harness) stop() error {
	h.cancel()
	select {
	case err := <-h.done:
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatalf("supervisor did not stop within 30s\n%s", h.logs.String())
		return nil
	}
}

func (h *harness) view(name string) PipelineView {
	for _, v := range h.sup.Views() {
		if v.Name == name {
			return v
		}
	}
	return PipelineView{Name: name}
}

func (h *harness) waitFor(what string, ok func() bool) {
	h.t.Helper()
	agenttest.Eventually(h.t, 10*time.Second, what, ok, h.logs)
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The ways editors and tools save a file.
type savePattern func(t testing.TB, dir, name, body string, step int)

var savePatterns = []struct {
	name string
	save savePattern
}{
	{"symlink swap", saveSymlinkSwap},
	{"temp and rename", saveTempRename},
	{"in place", saveInPlace},
	{"delete and create", saveDeleteCreate},
}

func saveInPlace(t testing.TB, dir, name, body string, step int) {
	if target, _ := os.Readlink(filepath.Join(dir, name)); target != "" {
		// Writing through a config map's symlink is not something tools do:
		// make it a plain file first.
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		saveTempRename(t, dir, name, string(data), step)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func saveTempRename(t testing.TB, dir, name, body string, _ int) {
	tmp := filepath.Join(dir, "."+name+".swp")
	writeFile(t, tmp, body)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func saveDeleteCreate(t testing.TB, dir, name, body string, _ int) {
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // shorter than the debounce
	writeFile(t, filepath.Join(dir, name), body)
}

// saveSymlinkSwap does what the kubelet does with a config map: the files
// are in a timestamped directory, `..data` points to it, and name is a
// symlink to ..data/name. An update writes a new directory and renames a
// new `..data` symlink over the old one.
func saveSymlinkSwap(t testing.TB, dir, name, body string, step int) {
	ts := fmt.Sprintf("..2026_11_28_%04d", step)
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ts, name), body)
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if target, _ := os.Readlink(filepath.Join(dir, name)); target != filepath.Join("..data", name) {
		tmp := filepath.Join(dir, "."+name+".link")
		if err := os.Symlink(filepath.Join("..data", name), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// reloadedPipeline is pipeline a's file for config tag tag: simulated
// readings tagged with the config that read them (a map sets cfg), with
// variations a reload must handle.
func reloadedPipeline(tag, variant int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n  - simulate: {sensors: 2, rate: %d, format: fields, shape: steady}\noperators:\n", []int{100, 150}[variant%2])
	fmt.Fprintf(&b, "  - map: {set: {cfg: \"%d\"}}\n", tag)
	if variant%3 == 1 {
		b.WriteString("  - fields: {drop: [ts]}\n")
	}
	fmt.Fprintf(&b, "sinks:\n  - record: {id: a}\n    batch: {max_records: %d}\n", []int{500, 64, 7}[variant%3])
	return b.String()
}

// invalidPipelines are saves that must not replace the running generation.
var invalidPipelines = []struct{ name, body string }{
	{"syntax", "sources: [\n  - simulate: {\n"},
	{"unknown operator", "sources:\n  - simulate: {format: fields}\noperators:\n  - frobnicate: {}\nsinks:\n  - record: {id: a}\n"},
	{"bad value", "sources:\n  - simulate: {format: fields, rate: -3}\nsinks:\n  - record: {id: a}\n"},
	// A file the config names is checked with it.
	{"bad TLS path", "sources:\n  - simulate: {format: fields}\nsinks:\n  - http: {url: \"https://127.0.0.1:9/\", tls: {ca_file: /nonexistent/ca.pem}}\n"},
	// Valid; its source fails to set up at connect: the reload rolls back.
	{"setup error", "sources:\n  - setupfail: {}\nsinks:\n  - record: {id: a}\n"},
}

const steadyPipeline = "sources:\n  - simulate: {sensors: 2, rate: 100, format: fields, shape: steady}\nsinks:\n  - record: {id: b}\n"

func TestFiftyReloadsUnderLoad(t *testing.T) {
	recs := map[string]*recorder{"a": newRecorder(), "b": newRecorder()}
	reg := withSetupFail(testRegistry(recs))
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	h := startHarness(t, reg, map[string]string{"b.yaml": steadyPipeline}, nil)
	saveSymlinkSwap(t, h.dir, "a.yaml", reloadedPipeline(0, 0), 0)
	h.waitFor("pipeline a", func() bool { return h.view("a").State == StateRunning })
	start := time.Now()

	gen, failures, tag := 1, uint64(0), 0
	last := reloadedPipeline(0, 0)
	kinds := map[string]int{}
	for step := 1; step <= 50; step++ {
		p := savePatterns[(step+step/4)%len(savePatterns)]
		var body, kind string
		switch step % 4 {
		case 0, 2:
			tag++
			kind, body = "valid", reloadedPipeline(tag, step)
		case 1:
			inv := invalidPipelines[(step/4)%len(invalidPipelines)]
			kind, body = "invalid "+inv.name, inv.body
		case 3:
			kind, body = "no-op", last
		}
		kinds[kind+" / "+p.name]++
		p.save(t, h.dir, "a.yaml", body, step)
		switch {
		case kind == "valid":
			gen++
			h.waitFor(fmt.Sprintf("step %d (%s, %s): generation %d", step, kind, p.name, gen), func() bool {
				v := h.view("a")
				return v.Generation == gen && v.State == StateRunning
			})
			last = body
		case kind == "no-op":
			time.Sleep(4 * h.sup.config().ReloadDebounce)
			if v := h.view("a"); v.Generation != gen || v.ReloadFailures != failures {
				t.Fatalf("step %d (no-op, %s): generation %d, failures %d; want %d, %d", step, p.name, v.Generation, v.ReloadFailures, gen, failures)
			}
		default:
			failures++
			h.waitFor(fmt.Sprintf("step %d (%s, %s): failure %d", step, kind, p.name, failures), func() bool {
				v := h.view("a")
				return v.ReloadFailures == failures && v.State == StateRunning && v.LastReloadError != ""
			})
			if v := h.view("a"); v.Generation != gen {
				t.Fatalf("step %d (%s): generation %d, want %d (the running one stays)", step, kind, v.Generation, gen)
			}
			last = body
		}
	}
	if gap := recs["b"].maxGap(start); gap > time.Second {
		t.Errorf("pipeline b paused for %v during a's reloads, want < 1s", gap)
	}
	if v := h.view("b"); v.Generation != 1 || v.State != StateRunning {
		t.Errorf("pipeline b: generation %d, state %s; want 1, running", v.Generation, v.State)
	}
	reloadTime := time.Since(start)
	if err := h.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	na := recs["a"].check(t, "a")
	nb := recs["b"].check(t, "b")
	t.Logf("50 saves in %v (%v): a delivered %d log records over %d configs, b %d", reloadTime.Round(time.Millisecond), kinds, na, tag+1, nb)
	if na == 0 || nb == 0 {
		t.Fatalf("nothing delivered: a %d, b %d", na, nb)
	}
	for _, want := range []string{"pipeline reloaded", "~operator map", "+operator fields", "-operator fields", "unknown operator type", "must be positive", "tls.ca_file: cannot read the CA file", "setup refused", "previous config runs again"} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("log has no %q", want)
		}
	}
	// Everything the agent started has ended and closed.
	if !wait.Until(5*time.Second, func() bool { return runtime.NumGoroutine() <= baseG && openFDs(t) <= baseFD }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines %d (baseline %d), open files %d (baseline %d)\n%s", runtime.NumGoroutine(), baseG, openFDs(t), baseFD, buf[:runtime.Stack(buf, true)])
	}
}
