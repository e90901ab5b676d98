package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/buffer"
)

func writeLog(t *testing.T, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "log")
	l, err := buffer.Open(dir, buffer.Options{Sync: buffer.SyncBatch})
	if err != nil {
		t.Fatal(err)
	}
	var pays [][]byte
	for i := range n {
		r := agent.Record{Key: "k", Fields: []agent.Field{agent.Int("n", int64(i))}}
		b, _ := r.MarshalMsg(nil)
		pays = append(pays, b)
	}
	last, err := l.Append(context.Background(), pays)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBufferInspectVerifyDump(t *testing.T) {
	dir := writeLog(t, 20)
	code, out, errb := run(t, "buffer", "inspect", dir)
	if code != exitOK || !strings.Contains(out, "records") || !strings.Contains(out, "20 (sequences 1 to 20)") {
		t.Errorf("inspect: exit %d\n%s%s", code, out, errb)
	}
	code, out, _ = run(t, "buffer", "verify", dir)
	if code != exitOK || !strings.Contains(out, "20 intact records") {
		t.Errorf("verify: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "buffer", "dump", dir, "--from", "5", "--limit", "3")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 3 {
		t.Fatalf("dump: exit %d, %d lines\n%s", code, len(lines), out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil || m["_seq"] != 5.0 || m["n"] != 4.0 || m["_key"] != "k" {
		t.Errorf("dump line: got %v (%v)", m, err)
	}
}

func TestBufferVerifyFindsDamage(t *testing.T) {
	dir := writeLog(t, 50)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("got %d segments, want 1", len(segs))
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	os.WriteFile(segs[0], data, 0o644)
	code, out, _ := run(t, "buffer", "verify", dir)
	if code != exitProblem || !strings.Contains(out, filepath.Base(segs[0])) {
		t.Errorf("got exit %d, want 1 and the damaged file named:\n%s", code, out)
	}
}

func TestBufferUsage(t *testing.T) {
	if code, _, _ := run(t, "buffer", "frob", t.TempDir()); code != exitUsage {
		t.Errorf("got exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := run(t, "buffer", "inspect", filepath.Join(t.TempDir(), "nope")); code != exitProblem {
		t.Errorf("got exit %d, want %d", code, exitProblem)
	}
}

// TestBufferInspectEmptyLog: a log without records shows no range of
// sequences and no oldest record (was "sequences 1 to 0" and a time).
func TestBufferInspectEmptyLog(t *testing.T) {
	dir := writeLog(t, 0)
	code, out, errb := run(t, "buffer", "inspect", dir)
	if code != exitOK || !regexp.MustCompile(`records +0 \(the next is sequence 1\)`).MatchString(out) || strings.Contains(out, " to ") || strings.Contains(out, "oldest") {
		t.Errorf("got exit %d:\n%s%s\nwant 0 records, no range, no oldest record", code, out, errb)
	}
	code, out, errb = run(t, "buffer", "inspect", "--json", dir)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); code != exitOK || err != nil || m["records"] != 0.0 || m["oldest"] != nil {
		t.Errorf("json: got exit %d, %v:\n%s%s\nwant records 0 and no oldest", code, err, out, errb)
	}
}

// TestBufferInspectJSONNames: --json speaks the admin API's snake_case.
func TestBufferInspectJSONNames(t *testing.T) {
	dir := writeLog(t, 5)
	code, out, errb := run(t, "buffer", "inspect", "--json", dir)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); code != exitOK || err != nil {
		t.Fatalf("got exit %d, %v:\n%s%s", code, err, out, errb)
	}
	for _, k := range []string{"dir", "records", "first_seq", "next_seq", "disk_bytes", "oldest", "segments", "cursors"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, out)
		}
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if strings.ToLower(k) != k || strings.ContainsAny(k, "- ") {
					t.Errorf("%s%s: not snake_case", path, k)
				}
				walk(path+k+".", e)
			}
		case []any:
			for _, e := range v {
				walk(path, e)
			}
		}
	}
	walk("", m)
	if m["records"] != 5.0 || m["first_seq"] != 1.0 || m["next_seq"] != 6.0 {
		t.Errorf("got records %v first_seq %v next_seq %v, want 5 1 6", m["records"], m["first_seq"], m["next_seq"])
	}
}

// TestBufferPointsToTheLog: a data directory, its pipelines directory or a
// pipeline's directory is not a log: every subcommand says which is, exit 1.
func TestBufferPointsToTheLog(t *testing.T) {
	data := t.TempDir()
	logDir := filepath.Join(data, "pipelines", "demo", "log")
	if err := os.MkdirAll(filepath.Dir(logDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(writeLog(t, 3), logDir); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{data, filepath.Join(data, "pipelines"), filepath.Join(data, "pipelines", "demo")} {
		for _, sub := range []string{"inspect", "verify", "dump"} {
			code, out, errb := run(t, "buffer", sub, dir)
			if code != exitProblem || out != "" || !strings.Contains(errb, "not a log directory") || !strings.Contains(errb, logDir) {
				t.Errorf("buffer %s %s: got exit %d:\n%s%s\nwant %d and %s named", sub, dir, code, out, errb, exitProblem, logDir)
			}
		}
	}
	if code, _, errb := run(t, "buffer", "inspect", t.TempDir()); code != exitProblem || !strings.Contains(errb, "not a log directory") {
		t.Errorf("empty directory: got exit %d, %q; want %d, not a log directory", code, errb, exitProblem)
	}
}

// TestBufferHelpListsEverySubcommand: buffer --help names each subcommand.
func TestBufferHelpListsEverySubcommand(t *testing.T) {
	code, out, errb := run(t, "buffer", "--help")
	help := out + errb
	if code != exitOK {
		t.Errorf("got exit %d", code)
	}
	first := strings.SplitN(help, "\n\n", 2)[0]
	for _, sub := range []string{"inspect", "verify", "dump", "drop", "redrive"} {
		if !strings.Contains(help, "\n  "+sub+" ") || !strings.Contains(first, sub) {
			t.Errorf("buffer --help: no %q in the usage lines and the list:\n%s", sub, help)
		}
	}
}
