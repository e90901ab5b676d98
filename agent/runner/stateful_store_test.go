package runner_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/dedup"
)

// storeRun runs windowPipeline with the given state store over dir until
// the batches are processed, and returns what the sink got and the log.
type storeRun struct {
	store   string // "" leaves the default
	sink    *agenttest.RecordingSink
	timeout time.Duration // shutdown timeout (default 5 s)
	keeper  *runner.StateKeeper
}

func (r storeRun) run(t *testing.T, dir string, batches ...[]agent.Record) (recs []agent.Record, logs string, status runner.Status) {
	t.Helper()
	if r.sink == nil {
		r.sink = &agenttest.RecordingSink{}
	}
	if r.timeout == 0 {
		r.timeout = 5 * time.Second
	}
	yaml := windowPipeline
	if r.store != "" {
		yaml += "state: {store: " + r.store + "}\n"
	}
	reg := windowRegistry(agenttest.NewScriptSource(batches...), r.sink)
	spec, err := reg.ParsePipeline("w.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	lb := &agenttest.LogBuffer{}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: dir, OpenLog: runner.OpenDiskLog(slog.New(slog.DiscardHandler)),
		Logger: slog.New(slog.NewTextHandler(lb, nil)), ShutdownTimeout: r.timeout, CheckpointInterval: 20 * time.Millisecond, States: r.keeper})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	return r.sink.Records(), lb.String(), p.Status()
}

func windowSum(recs []agent.Record, key string, second int) (float64, int) {
	id := fmt.Sprintf("w:window:%s:%d", key, time.Date(2024, 1, 1, 0, 0, second, 0, time.UTC).UnixNano())
	sum, n := 0.0, 0
	for _, r := range recs {
		if r.ID == id {
			sum, n = r.Field("v_sum").Float, n+1
		}
	}
	return sum, n
}

func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// TestMemoryStoreRestart: with `state: {store: memory}` a restart starts
// the windows empty, after the last record the first run processed: the
// window that spans both runs holds only the second run's readings, none
// of the first run's records is processed again, nothing is written to a
// state file, and one INFO per run says so.
func TestMemoryStoreRestart(t *testing.T) {
	dir := t.TempDir()
	r := storeRun{store: "memory"}
	first, logs1, st := r.run(t, dir, readings(0, 25))
	if st.StateStore == nil || st.StateStore.Store != "memory" || st.StateStore.Budget <= 0 {
		t.Errorf("status state = %+v, want the memory store with its budget", st.StateStore)
	}
	if st.Input == nil || st.Input.Backlog != 0 {
		t.Errorf("status input = %+v, want every record processed", st.Input)
	}
	second, logs2, _ := r.run(t, dir, readings(25, 15))
	all := append(first, second...)
	seen := map[string]bool{}
	for _, rec := range all {
		if seen[rec.ID] {
			t.Errorf("output %s emitted twice", rec.ID)
		}
		seen[rec.ID] = true
	}
	// Windows 0 and 1 closed in the first run, window 2 in the second;
	// window 3 stays open.
	if len(first) != 6 || len(second) != 3 {
		t.Errorf("got %d outputs in the first run, %d in the second; want 6 and 3", len(first), len(second))
	}
	if sum, n := windowSum(all, "s0", 1); n != 1 || sum != 45 {
		t.Errorf("window 1 of s0: sum %v (%d outputs), want 45 once", sum, n)
	}
	// Window 2 of s0: 21 and 24 were in the first run, lost with its
	// state; 27 in the second.
	if sum, n := windowSum(all, "s0", 2); n != 1 || sum != 27 {
		t.Errorf("window 2 of s0: sum %v (%d outputs), want 27 once (the second run's reading only)", sum, n)
	}
	if exists(dir, "state.db") || exists(dir, "state.committed") || !exists(dir, "state.memory") {
		t.Errorf("data dir: state.db %v, state.committed %v, state.memory %v; want only state.memory",
			exists(dir, "state.db"), exists(dir, "state.committed"), exists(dir, "state.memory"))
	}
	for i, logs := range []string{logs1, logs2} {
		if n := strings.Count(logs, "state is not kept across restarts"); n != 1 {
			t.Errorf("run %d: %d INFO lines about the memory store, want 1:\n%s", i+1, n, logs)
		}
		if strings.Contains(logs, "level=WARN") {
			t.Errorf("run %d: a warning:\n%s", i+1, logs)
		}
	}
	if !strings.Contains(logs2, "log_next=26") {
		t.Errorf("second run does not start after the first run's 25 records:\n%s", logs2)
	}
}

// TestMemoryStoreReload: a StateKeeper hands the memory store from one
// generation to the next, so that a reload keeps the windows as bbolt
// does: the window spanning both generations holds both's readings.
func TestMemoryStoreReload(t *testing.T) {
	dir := t.TempDir()
	r := storeRun{store: "memory", keeper: &runner.StateKeeper{}}
	first, _, _ := r.run(t, dir, readings(0, 25))
	second, logs, _ := r.run(t, dir, readings(25, 15))
	all := append(first, second...)
	if sum, n := windowSum(all, "s0", 2); n != 1 || sum != 72 {
		t.Errorf("window 2 of s0: sum %v (%d outputs), want 72 once (21, 24 and 27)", sum, n)
	}
	if !strings.Contains(logs, "state is carried over") {
		t.Errorf("second generation does not say that it carries the state over:\n%s", logs)
	}
	// Forgotten (the pipeline was removed): the next one starts empty.
	r.keeper.Forget("w")
	third, _, _ := r.run(t, dir, readings(40, 20))
	if sum, n := windowSum(third, "s0", 4); n != 1 || sum != 42+45+48 {
		t.Errorf("window 4 of s0 after Forget: sum %v (%d outputs), want %v once", sum, n, 42+45+48)
	}
	// Window 3 had the second generation's readings only, in the state
	// that was forgotten.
	if _, n := windowSum(third, "s0", 3); n != 0 {
		t.Errorf("window 3 of s0 emitted %d times after Forget, want none", n)
	}
}

// TestStateStoreSwitch switches a pipeline from bbolt to memory and back.
// The memory run's outputs are still in the outbox when it stops (the sink
// is down). The bbolt run after it must not recover the state file of the
// first run: that would cut the outbox back to the first run's end
// (losing the memory run's outputs) and replay the memory run's records
// on stale state (the same window IDs with other values).
func TestStateStoreSwitch(t *testing.T) {
	dir := t.TempDir()
	first, _, _ := storeRun{store: "bbolt"}.run(t, dir, readings(0, 25))
	down := &agenttest.RecordingSink{Fail: func(int, []agent.Record) error { return errors.New("destination down") }}
	_, logs2, st := storeRun{store: "memory", sink: down, timeout: 300 * time.Millisecond}.run(t, dir, readings(25, 15))
	if st.Log.Backlog != 3 {
		t.Fatalf("memory run left %d outputs undelivered, want the 3 of window 2", st.Log.Backlog)
	}
	if !strings.Contains(logs2, "the state file of an earlier run with the bbolt store is deleted") || exists(dir, "state.db") {
		t.Errorf("memory run did not delete state.db (exists: %v):\n%s", exists(dir, "state.db"), logs2)
	}
	third, logs3, _ := storeRun{}.run(t, dir, readings(40, 15))
	all := append(first, third...)
	// Window 2 of s0: the memory run started empty, so 27 only.
	if sum, n := windowSum(all, "s0", 2); n != 1 || sum != 27 {
		t.Errorf("window 2 of s0: sum %v, %d outputs; want the memory run's 27, delivered once", sum, n)
	}
	for _, key := range []string{"s0", "s1", "s2"} {
		if _, n := windowSum(all, key, 3); n != 0 {
			t.Errorf("window 3 of %s emitted: the bbolt run replayed the memory run's records", key)
		}
		if _, n := windowSum(all, key, 4); n != 1 {
			t.Errorf("window 4 of %s: %d outputs, want 1", key, n)
		}
	}
	if !strings.Contains(logs3, "the last run kept its state in memory") || strings.Contains(logs3, "level=WARN") {
		t.Errorf("bbolt run after the memory run: want one INFO, no warning:\n%s", logs3)
	}
	if exists(dir, "state.memory") || !exists(dir, "state.committed") {
		t.Errorf("after the bbolt run: state.memory %v, state.committed %v; want false, true",
			exists(dir, "state.memory"), exists(dir, "state.committed"))
	}
}

const memoryCrashChildEnv = "PSPF_MEMORY_CRASH_CHILD"

const memoryCrashPipeline = `
sources: [{eof: {}}]
operators:
  - dedup: {ttl: 1h}
sinks: [{lines: {}, retry: {initial: 1ms, max: 5ms}, batch: {max_records: 7}}]
state: {store: memory}
`

// TestMemoryStoreCrashChild is the child process of TestMemoryStoreCrash:
// it runs memoryCrashPipeline in $PSPF_DIR until its log is processed and
// delivered, appending outputs to $PSPF_DIR/out.
func TestMemoryStoreCrashChild(t *testing.T) {
	if os.Getenv(memoryCrashChildEnv) != "1" {
		return // only meaningful as the child of TestMemoryStoreCrash
	}
	dir := os.Getenv("PSPF_DIR")
	if prev, err := os.ReadFile(filepath.Join(dir, "out")); err == nil && len(prev) > 0 && prev[len(prev)-1] != '\n' {
		if err := os.WriteFile(filepath.Join(dir, "out"), append(prev, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, "out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	reg := runner.NewRegistry()
	none := func() *struct{} { return &struct{}{} }
	reg.Sources["eof"] = agent.Typed[agent.Source]("test", none, func(*struct{}, agent.Env) (agent.Source, error) { return eofSource{}, nil })
	reg.Sinks["lines"] = agent.Typed[agent.Sink]("test", none, func(*struct{}, agent.Env) (agent.Sink, error) { return &lineSink{f}, nil })
	reg.Operators["dedup"] = dedup.Factory()
	spec, err := reg.ParsePipeline("crash.yaml", []byte(memoryCrashPipeline), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: dir, OpenLog: runner.OpenDiskLog(slog.New(slog.DiscardHandler)),
		CheckpointInterval: 15 * time.Millisecond, ShutdownTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryStoreCrash kills a pipeline with the memory store with SIGKILL
// at random moments and restarts it, for 10 seeds. Its state is lost at
// every kill, and the stage goes on after the last checkpoint's ack, so
// the pipeline-log records must each reach the sink: lost = 0 (counted by
// ID, one per record); the ones processed after the last checkpoint
// before a kill are processed again from empty state and delivered twice
// (counted and logged).
func TestMemoryStoreCrash(t *testing.T) {
	const n = 10_000
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(dir string) *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^TestMemoryStoreCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), memoryCrashChildEnv+"=1", "PSPF_DIR="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	landed, dups := 0, 0
	for seed := range uint64(10) {
		dir := t.TempDir()
		fillCrashLog(t, dir, n)
		rng := rand.New(rand.NewPCG(seed, 7))
		for kills := 0; kills < 3; kills++ {
			cmd := run(dir)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("seed %d: child: %v", seed, err)
				}
				kills = 3 // finished before the kill
				continue
			case <-time.After(time.Duration(2+rng.IntN(100)) * time.Millisecond):
			}
			cmd.Process.Kill() // SIGKILL
			if err := <-done; err != nil {
				landed++
			}
		}
		if err := run(dir).Wait(); err != nil {
			t.Fatalf("seed %d: last run: %v", seed, err)
		}
		got := readOutputs(t, dir)
		lines := countLines(t, filepath.Join(dir, "out"))
		lost := 0
		for i := 1; i <= n; i++ {
			if _, ok := got[fmt.Sprintf("crash:%d", i)]; !ok {
				lost++
			}
		}
		if lost > 0 || len(got) != n {
			t.Errorf("seed %d: %d of %d records lost (%d IDs delivered)", seed, lost, n, len(got))
		}
		dups += lines - len(got)
		if exists(dir, "state.db") {
			t.Errorf("seed %d: a state.db was written", seed)
		}
	}
	t.Logf("%d kills landed in a running child; %d records delivered twice (processed after the last checkpoint before a kill)", landed, dups)
	if landed < 10 {
		t.Errorf("only %d kills landed; the children finish too fast for the test to mean much", landed)
	}
}

// countLines counts the complete output lines of a child's out file.
func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if _, rec, ok := strings.Cut(sc.Text(), "\t"); ok && strings.HasSuffix(rec, "}") {
			n++
		}
	}
	return n
}

// TestMemoryStoreFull: a memory store at its budget refuses new state; the
// operator's batch fails and goes to the dead letters, so every record is
// either delivered or dead-lettered (none lost), and the refusals show:
// one WARN for the episode, pspf_state_writes_refused_total and the
// status's state.refused.
func TestMemoryStoreFull(t *testing.T) {
	var batches [][]agent.Record
	for b := range 20 {
		var recs []agent.Record
		for i := range 10 {
			recs = append(recs, agent.Record{ID: fmt.Sprintf("m-%03d", b*10+i), Fields: []agent.Field{agent.Int("n", int64(b*10+i))}})
		}
		batches = append(batches, recs)
	}
	sink := &agenttest.RecordingSink{}
	reg := harness(agenttest.NewScriptSource(batches...), nil, sink)
	reg.Operators["dedup"] = dedup.Factory()
	const yaml = "sources: [{script: {}}]\noperators: [{dedup: {}}]\nsinks: [{rec: {}, retry: {initial: 1ms, max: 5ms}}]\nstate: {store: memory}\n"
	spec, err := reg.ParsePipeline("d.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	logs := &agenttest.LogBuffer{}
	m := runner.NewMetrics()
	const budget = 8 << 10 // room for about 45 identities
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: t.TempDir(), OpenLog: runner.OpenDiskLog(slog.New(slog.DiscardHandler)),
		Logger: slog.New(slog.NewTextHandler(logs, nil)), ShutdownTimeout: 5 * time.Second, CheckpointInterval: 20 * time.Millisecond, StateCacheBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := p.Status()
	delivered := len(sink.Records())
	// dedup fails the whole batch it was given (the stage reads what the
	// log holds, up to 4 MiB) at its first refused Put.
	if st.DeadLetters == 0 || uint64(delivered)+st.DeadLetters != 200 {
		t.Errorf("delivered %d, dead-lettered %d; want some dead-lettered, 200 in all\n%s", delivered, st.DeadLetters, logs)
	}
	if st.StateStore == nil || st.StateStore.Refused == 0 || st.StateStore.Bytes > budget || st.StateStore.Budget != budget {
		t.Errorf("status state = %+v; want refusals, within the budget %d", st.StateStore, budget)
	}
	if got := metric(m, "pspf_state_writes_refused_total"); got == "" || strings.HasSuffix(got, " 0") {
		t.Errorf("metric: %q, want refusals counted", got)
	}
	if got := metric(m, "pspf_state_bytes"); got == "" || strings.HasSuffix(got, " 0") {
		t.Errorf("metric: %q, want the state's bytes", got)
	}
	if n := strings.Count(logs.String(), "memory store full"); n != 1 {
		t.Errorf("%d WARN lines about the full store, want 1:\n%s", n, logs)
	}
}
