package runner_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/window"
	"github.com/pspf/pspf-edge/state"
)

const crashChildEnv = "PSPF_STATEFUL_CRASH_CHILD"

// eofSource has no input: the child only processes the log the parent
// filled, then drains and exits.
type eofSource struct{}

func (eofSource) Connect(context.Context) error { return nil }
func (eofSource) Read(context.Context) ([]agent.Record, agent.AckFunc, error) {
	return nil, nil, io.EOF
}
func (eofSource) Close(context.Context) error { return nil }

// lineSink appends "ID<TAB>record JSON" lines to a file, fsynced before
// Write returns (a durable destination).
type lineSink struct{ f *os.File }

func (s *lineSink) Connect(context.Context) error { return nil }
func (s *lineSink) Write(_ context.Context, recs []agent.Record) error {
	var b []byte
	for i := range recs {
		b = append(b, recs[i].ID...)
		b = append(b, '\t')
		b = agent.AppendJSON(b, &recs[i])
		b = append(b, '\n')
	}
	if _, err := s.f.Write(b); err != nil {
		return err
	}
	return s.f.Sync()
}
func (s *lineSink) Close(context.Context) error { return s.f.Close() }

const crashPipeline = `
sources: [{eof: {}}]
operators:
  - window:
      type: tumbling
      size: 1s
      aggregates: [{fn: sum, field: v}, {fn: count}, {fn: mean, field: v}, {fn: p90, field: v}]
sinks: [{lines: {}, retry: {initial: 1ms, max: 5ms}, batch: {max_records: 7}}]
`

// TestStatefulCrashChild is the child process of TestStatefulCrash: it runs
// the windowed pipeline in $PSPF_DIR until its log is processed and
// delivered, appending outputs to $PSPF_DIR/out.
func TestStatefulCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) != "1" {
		return // only meaningful as the child of TestStatefulCrash
	}
	dir := os.Getenv("PSPF_DIR")
	f, err := os.OpenFile(filepath.Join(dir, "out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// A kill can tear the last line: end it, or the next line would be
	// read as its continuation.
	if prev, err := os.ReadFile(filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	} else if len(prev) > 0 && prev[len(prev)-1] != '\n' {
		if _, err := f.Write([]byte{'\n'}); err != nil {
			t.Fatal(err)
		}
	}
	reg := runner.NewRegistry()
	none := func() *struct{} { return &struct{}{} }
	reg.Sources["eof"] = agent.Typed[agent.Source]("test", none, func(*struct{}, agent.Env) (agent.Source, error) { return eofSource{}, nil })
	reg.Sinks["lines"] = agent.Typed[agent.Sink]("test", none, func(*struct{}, agent.Env) (agent.Sink, error) { return &lineSink{f}, nil })
	reg.Operators["window"] = window.Factory()
	spec, err := reg.ParsePipeline("crash.yaml", []byte(crashPipeline), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
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

// fillCrashLog writes n readings of 10 keys to the pipeline log in dir:
// 1 ms apart in event time, every 97th one 1.5 s late.
func fillCrashLog(t *testing.T, dir string, n int) {
	t.Helper()
	l, err := runner.OpenDiskLog(slog.New(slog.DiscardHandler))(filepath.Join(dir, "log"), runner.DefaultBufferConfig())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	var pays [][]byte
	for i := range n {
		et := base + int64(i)*int64(time.Millisecond)
		if i%97 == 0 {
			et -= int64(1500 * time.Millisecond)
		}
		r := agent.Record{Key: fmt.Sprintf("k%d", i%10), EventTime: et, Fields: []agent.Field{agent.Float("v", float64(i%13))}}
		b, err := r.MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		pays = append(pays, b)
	}
	last, err := l.Append(context.Background(), pays)
	if err == nil {
		err = l.Sync(context.Background(), last)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// readOutputs reads a child's out file: every output by ID, failing on an
// ID delivered twice with different values. A torn last line (a Write the
// kill interrupted) is ignored: it was not acknowledged.
func readOutputs(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, rec, ok := strings.Cut(sc.Text(), "\t")
		if !ok || !strings.HasSuffix(rec, "}") {
			continue
		}
		if old, seen := out[id]; seen && old != rec {
			t.Errorf("output %s delivered twice with different values:\n%s\n%s", id, old, rec)
		}
		out[id] = rec
	}
	return out
}

// TestStatefulCrash kills a windowed pipeline with SIGKILL at random moments
// and restarts it, for 20 seeds: the set of window outputs, by stable ID and
// with their values, must equal that of an uninterrupted run, and the state
// file must pass bbolt's consistency check.
func TestStatefulCrash(t *testing.T) {
	const n = 20_000
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(dir string) *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^TestStatefulCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", "PSPF_DIR="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	refDir := t.TempDir()
	fillCrashLog(t, refDir, n)
	if err := run(refDir).Wait(); err != nil {
		t.Fatalf("uninterrupted run: %v", err)
	}
	want := readOutputs(t, refDir)
	// 20 s of event time, 10 keys; the last second stays open; the first
	// reading, 1.5 s early, opens a window of its own (no watermark yet).
	if len(want) != 191 {
		t.Fatalf("uninterrupted run: got %d outputs, want 191", len(want))
	}
	landed := 0
	for seed := range uint64(20) {
		dir := t.TempDir()
		fillCrashLog(t, dir, n)
		rng := rand.New(rand.NewPCG(seed, 6))
		kills := 0
		for kills < 3 {
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
			kills++
		}
		if err := run(dir).Wait(); err != nil {
			t.Fatalf("seed %d: last run: %v", seed, err)
		}
		got := readOutputs(t, dir)
		if len(got) != len(want) {
			t.Errorf("seed %d: got %d outputs, want %d", seed, len(got), len(want))
		}
		for id, w := range want {
			if got[id] != w {
				t.Errorf("seed %d: output %s: got %q, want %q", seed, id, got[id], w)
			}
		}
		db, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
		if err != nil {
			t.Fatalf("seed %d: open state: %v", seed, err)
		}
		if err := db.Check(); err != nil {
			t.Errorf("seed %d: state file check: %v", seed, err)
		}
		db.Close()
	}
	t.Logf("%d kills landed in a running child", landed)
	if landed < 20 {
		t.Errorf("only %d kills landed; the children finish too fast for the test to mean much", landed)
	}
}
