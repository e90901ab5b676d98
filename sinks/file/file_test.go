package file

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func records(from, n int) []agent.Record {
	out := make([]agent.Record, n)
	for i := range out {
		out[i] = agent.Record{ID: "p:" + string(rune('a'+(from+i)%26)), Fields: []agent.Field{agent.Int("n", int64(from+i)), agent.String("pad", strings.Repeat("x", 40))}}
	}
	return out
}

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: not JSON: %q", path, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func TestAppendsAndRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "out.ndjson")
	s := New(Config{Path: path, MaxBytes: 1024, MaxFiles: 2, Fsync: "batch"})
	ctx := context.Background()
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := s.Write(ctx, records(i*10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second close: %v", err)
	}
	// The newest records are in path, then path.1, path.2; older ones rotated away.
	var all []map[string]any
	for _, p := range []string{path + ".2", path + ".1", path} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("got %v, want %s to exist", err, p)
		}
		if st.Size() > 1024 {
			t.Errorf("%s: got %d bytes, want at most 1024", p, st.Size())
		}
		all = append(all, readLines(t, p)...)
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("got %v, want no path.3 with max_files 2", err)
	}
	// Consecutive and ending with the last record written.
	for i := 1; i < len(all); i++ {
		if all[i]["n"].(float64) != all[i-1]["n"].(float64)+1 {
			t.Fatalf("records not consecutive at %d: %v then %v", i, all[i-1]["n"], all[i]["n"])
		}
	}
	if last := all[len(all)-1]["n"].(float64); last != 99 {
		t.Errorf("got last record %v, want 99", last)
	}
}

func TestReopenAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	ctx := context.Background()
	for range 2 {
		s := New(*Defaults())
		s.cfg.Path = path
		if err := s.Write(ctx, records(0, 3)); err != nil {
			t.Fatal(err)
		}
		s.Close(ctx)
	}
	if got := len(readLines(t, path)); got != 6 {
		t.Errorf("got %d lines, want 6", got)
	}
}

func TestUnwritableDirectoryFails(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	s := New(Config{Path: filepath.Join(blocker, "out.ndjson"), MaxBytes: 1 << 20, Fsync: "batch"})
	if err := s.Connect(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "file sink: ") {
		t.Errorf("got %v, want a file sink error", err)
	}
}

func TestREADMESample(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["file"] = Factory()
	agenttest.CheckREADMESamples(t, "README.md", reg)
}
