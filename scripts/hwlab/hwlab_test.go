// Package hwlab runs the hardware-in-the-loop lab (hwlab.sh beside this file)
// as part of `go test ./...`: the cross-compiled agent in QEMU VMs on Debian's
// stock arm64 and amd64 kernels, reading a simulated GPIO chip and a 16550 UART.
package hwlab

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHWLab runs every scenario on both architectures. It never skips: a host
// that cannot run the lab fails with the reason.
func TestHWLab(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("hwlab needs a Linux host with apt-get (QEMU, a cross compiler and Debian's kernels); this is %s", runtime.GOOS)
	}
	trackInputs(t)

	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "./hwlab.sh")
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Its own process group, so that a timeout ends QEMU too: SIGTERM lets the
	// script kill its VMs by PID; whatever is left gets SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	t.Logf("hwlab.sh took %s:\n%s", time.Since(start).Round(time.Second), tail(out.String(), 60))
	if err != nil {
		t.Fatalf("hwlab.sh: %v (ctx: %v)\n%s\n"+
			"The lab needs QEMU (qemu-system-arm, qemu-system-x86), gcc-12 and gcc-12-aarch64-linux-gnu, "+
			"which it installs with apt-get when run as root, and Debian's kernel packages, which it downloads "+
			"through the machine's apt sources; see scripts/hwlab/README.md.",
			err, ctx.Err(), hint(out.String()))
	}
}

// trackInputs reads every file the lab's outcome depends on (the agent's
// sources, the lab itself) and the lab's environment, so that go test's result
// cache reruns the lab exactly when one of them changed.
func trackInputs(t *testing.T) {
	t.Helper()
	for _, k := range []string{"HWLAB_CACHE", "HWLAB_ARCHES", "HWLAB_TIMEOUT", "HWLAB_REFRESH"} {
		_ = os.Getenv(k)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatalf("repo root: %v", err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "dist" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" || strings.HasPrefix(rel, "scripts"+string(filepath.Separator)) {
			_, err := os.ReadFile(p)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the lab's inputs: %v", err)
	}
}

// hint picks the lines that say why the lab failed.
func hint(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "FAIL") || strings.Contains(l, "failed") || strings.Contains(l, " fail ") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
