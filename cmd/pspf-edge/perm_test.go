package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDataModesUnderUmask0 runs the agent under umask 0 with a stateful
// pipeline (state.db, its checkpoints), dead letters (late readings), a
// sink that is down (a backlog, cursors) and the admin address published,
// then looks at every directory and file it wrote: directories 0750 at
// most, files 0640 at most, the runtime directory's entry 0600. Before,
// the logs' directories were 0755 and their files 0644.
func TestDataModesUnderUmask0(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	const stateful = `sources:
  - simulate: {sensors: 2, rate: 200, shape: sine, seed: 1}
operators:
  - decode: {format: json, key_field: sensor, time_field: ts, time_format: unix_ms}
  - window: {type: tumbling, size: 100ms, lateness: 1ms, aggregates: [{fn: count}]}
sinks:
  - down: {}
`
	a := startAgentFile(t, map[string]string{"w.yaml": stateful, "r.yaml": adminPipeline}, "127.0.0.1:0", "")
	a.waitFor("a checkpoint", func() bool {
		_, err := os.Stat(filepath.Join(a.data, "pipelines", "w", "state.db"))
		return err == nil && a.view("w").BacklogRecords > 0
	})
	run := t.TempDir()
	runDir := filepath.Join(run, "agents")
	unpublish, err := publishAdminAddr(a.data, runDir, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(runDir)
	for _, e := range entries {
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s in the runtime directory: mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	unpublish()
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	filepath.WalkDir(a.data, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		allowed := os.FileMode(0o640)
		if d.IsDir() {
			allowed = 0o750
		}
		if extra := fi.Mode().Perm() &^ allowed; extra != 0 {
			t.Errorf("%s: mode %v, want at most %v", p, fi.Mode().Perm(), allowed)
		}
		seen = append(seen, strings.TrimPrefix(p, a.data))
		return nil
	})
	for _, want := range []string{"/pipelines/w/state.db", "/pipelines/w/log", "/pipelines/w/dead", "/pipelines/r/log/SEQUENCE", "/LOCK"} {
		found := false
		for _, s := range seen {
			found = found || strings.HasPrefix(s, want)
		}
		if !found {
			t.Errorf("no %s among the files looked at: %v", want, seen)
		}
	}
}
