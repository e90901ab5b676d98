package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/wait"
)

// buildBinary builds pspf-edge for goarch (and goarm) into dir.
func buildBinary(t *testing.T, dir, goarch, goarm string) string {
	t.Helper()
	bin := filepath.Join(dir, "pspf-edge-"+goarch+goarm)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", goarch, err, out)
	}
	return bin
}

// runDemo runs the demo pipeline with the given command prefix (empty, or a
// qemu user-mode emulator) until the console has shown want records, stops it
// with SIGTERM and checks the clean shutdown and what the console and the
// file sink got.
func runDemo(t *testing.T, prefix []string, bin string, want int) {
	t.Helper()
	work := t.TempDir()
	demo, err := filepath.Abs("../../pipelines/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, prefix...), bin, "run", "-p", demo, "--data-dir", filepath.Join(work, "data"), "--admin", "")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = work
	var stdout, stderr agenttest.LogBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	// Stop once want records have shown on the console: the stop then comes
	// while the pipeline is busy.
	if !wait.Until(30*time.Second, func() bool { return strings.Count(stdout.String(), "temp=") >= want }) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("fewer than %d records on the console within 30s\nstdout:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exited with %v after SIGTERM\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("agent did not stop within 30s of SIGTERM\nstderr:\n%s", stderr.String())
	}
	logs := stderr.String()
	for _, want := range []string{"agent running", "pipeline draining", "pipeline stopped", "agent stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "level=ERROR") {
		t.Errorf("errors logged:\n%s", logs)
	}
	// Every record the console printed is also in the file, with a stable ID,
	// and the IDs have no gaps or repeats.
	consoleLines := strings.Count(stdout.String(), "temp=")
	f, err := os.Open(filepath.Join(work, ".run", "demo.ndjson"))
	if err != nil {
		t.Fatalf("file sink output: %v", err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", n+1, err, sc.Text())
		}
		id, _ := rec["_id"].(string)
		if id == "" || seen[id] {
			t.Fatalf("line %d: got id %q (empty or repeated)", n+1, id)
		}
		seen[id] = true
		if _, ok := rec["temp_f"].(float64); !ok {
			t.Errorf("line %d: got %v, want a numeric temp_f from the map operator", n+1, rec)
		}
		n++
	}
	if n == 0 || n != consoleLines {
		t.Errorf("got %d records in the file and %d on the console, want the same non-zero count", n, consoleLines)
	}
}

// TestDemoEndToEnd builds the binary, runs the demo, stops it with SIGTERM and
// checks a clean shutdown and the file sink's content.
func TestDemoEndToEnd(t *testing.T) {
	bin := buildBinary(t, t.TempDir(), "amd64", "")
	runDemo(t, nil, bin, 16)
}

// TestCrossBuiltBinariesUnderQEMU runs the armv7 and arm64 binaries under
// qemu user-mode emulation (Debian's qemu-user-static): validate the demo and
// run it until 16 records have shown.
func TestCrossBuiltBinariesUnderQEMU(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ goarch, goarm, qemu string }{
		{"arm", "7", "qemu-arm-static"},
		{"arm64", "", "qemu-aarch64-static"},
	} {
		t.Run(tc.goarch+tc.goarm, func(t *testing.T) {
			qemu, err := exec.LookPath(tc.qemu)
			if err != nil {
				t.Fatalf("%s not found: install Debian's qemu-user-static (scripts/deps.sh does)", tc.qemu)
			}
			bin := buildBinary(t, dir, tc.goarch, tc.goarm)
			out, err := exec.Command(qemu, bin, "validate", "../../pipelines/demo.yaml").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "demo.yaml: ok") {
				t.Fatalf("validate under %s: %v\n%s", tc.qemu, err, out)
			}
			out, err = exec.Command(qemu, bin, "version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "linux/"+tc.goarch) {
				t.Fatalf("version under %s: %v\n%s", tc.qemu, err, out)
			}
			runDemo(t, []string{qemu}, bin, 16)
		})
	}
}
