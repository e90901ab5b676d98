package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
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
