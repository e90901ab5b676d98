package packaging

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The install test never installs anything on the machine it runs on. It
// re-runs itself (the test binary) as PID 1 of new mount, PID, UTS and IPC
// namespaces, where the child mounts a private root: an overlay whose lower
// layer is this machine's own root file system, read-only, and whose upper
// layer is a tmpfs that only the child's namespace sees. dpkg, useradd and
// the maintainer scripts write into that tmpfs; it is gone when the child
// exits (the kernel then also kills whatever the child left running in its
// PID namespace). /run and /tmp are fresh tmpfs too, so no script in the
// sandbox finds a running systemd to start or stop units with.

// Environment of the child (set by runSandbox).
const (
	sandboxEnv  = "PSPF_PACKAGING_SANDBOX" // the scratch directory to mount on
	debEnv      = "PSPF_PACKAGING_DEB"     // the package, inside the sandbox
	upgradeEnv  = "PSPF_PACKAGING_UPGRADE" // the same package as version 1.0.1
	sandboxDebs = "/pkgs"                  // where the packages are, inside
	overlayFSID = 0x794c7630               // statfs magic of overlayfs
)

func TestMain(m *testing.M) {
	if scratch := os.Getenv(sandboxEnv); scratch != "" {
		if err := enterSandbox(scratch, os.Getenv("PSPF_PACKAGING_DIST")); err != nil {
			fmt.Fprintf(os.Stderr, "packaging sandbox: %v\n", err)
			os.Exit(3)
		}
	}
	os.Exit(m.Run())
}

// inSandbox reports whether this process is the sandboxed child.
func inSandbox() bool { return os.Getenv(sandboxEnv) != "" }

// runSandbox runs TestDebianPackage again in the sandbox, with the packages
// of dist at /pkgs, and fails t with the child's output if it fails.
func runSandbox(t *testing.T, dist, deb, upgrade string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The scratch directory is only a mount point: the child mounts a tmpfs
	// on it in its own namespace, so nothing is ever written into it here.
	scratch := t.TempDir()
	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-20*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestDebianPackage$", "-test.v=true", "-test.count=1")
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "TMPDIR=/tmp", "LANG=C.UTF-8",
		sandboxEnv + "=" + scratch,
		"PSPF_PACKAGING_DIST=" + dist,
		debEnv + "=" + filepath.Join(sandboxDebs, filepath.Base(deb)),
		upgradeEnv + "=" + filepath.Join(sandboxDebs, filepath.Base(upgrade)),
	}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("sandbox: %s", time.Since(start).Round(100*time.Millisecond))
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "--- ") || strings.Contains(line, "FAIL") || strings.Contains(line, "_test.go:") {
			t.Log("sandbox: " + line)
		}
	}
	if err != nil {
		t.Fatalf("the install test in the sandbox failed: %v (ctx: %v)\n%s", err, ctx.Err(), out)
	}
	if !strings.Contains(string(out), "--- PASS: TestDebianPackage") {
		t.Fatalf("the sandbox ran no install test:\n%s", out)
	}
}

// enterSandbox builds the private root on scratch and chroots into it. It
// refuses to do anything unless this process is PID 1 of its own PID
// namespace, which runSandbox arranges: never on the machine's own mounts.
func enterSandbox(scratch, dist string) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("pid %d: not the first process of a new PID namespace; refusing to mount", os.Getpid())
	}
	must := func(err error, what string) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	// Nothing mounted from here on propagates back to the machine.
	if err := must(syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""), "make / private"); err != nil {
		return err
	}
	if err := must(syscall.Mount("tmpfs", scratch, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=1g,mode=0700"), "tmpfs on "+scratch); err != nil {
		return err
	}
	root := filepath.Join(scratch, "root")
	layers, err := lowerLayers()
	if err != nil {
		return err
	}
	for i, mp := range layers {
		upper, work := filepath.Join(scratch, fmt.Sprint("upper", i)), filepath.Join(scratch, fmt.Sprint("work", i))
		target := filepath.Join(root, mp)
		for _, d := range []string{upper, work, target} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		opts := "lowerdir=" + mp + ",upperdir=" + upper + ",workdir=" + work
		if err := must(syscall.Mount("overlay", target, "overlay", 0, opts), "overlay of "+mp); err != nil {
			return err
		}
	}
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "proc", "proc", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"sysfs", "sys", "sysfs", syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"/dev", "dev", "", syscall.MS_BIND | syscall.MS_REC, ""},
		{"tmpfs", "run", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=0755"},
		{"tmpfs", "tmp", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777"},
		{dist, sandboxDebs[1:], "", syscall.MS_BIND, ""},
	} {
		dst := filepath.Join(root, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := must(syscall.Mount(m.src, dst, m.fstype, m.flags, m.data), "mount "+m.dst); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "run/lock"), 0o1777); err != nil {
		return err
	}
	if err := must(syscall.Sethostname([]byte("pspf-edge-install-test")), "hostname"); err != nil {
		return err
	}
	if err := must(syscall.Chroot(root), "chroot"); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	// The last guard before dpkg runs: / must be the overlay.
	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err != nil || st.Type != overlayFSID {
		return fmt.Errorf("/ is not the private overlay after chroot (statfs type %#x, %v)", st.Type, err)
	}
	return nil
}

// lowerLayers lists the mount points whose files the private root shows: /
// and any separate file system under /etc, /usr, /var or /opt (where dpkg and
// the package write), parents first.
func lowerLayers() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	layers := []string{"/"}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, top := range []string{"/etc", "/usr", "/var", "/opt"} {
			if (mp == top || strings.HasPrefix(mp, top+"/")) && !slices.Contains(layers, mp) {
				layers = append(layers, mp)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(layers, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	if len(layers) > 1 {
		// "/" sorts with the top-level ones; it must come first.
		layers = append([]string{"/"}, slices.DeleteFunc(layers, func(s string) bool { return s == "/" })...)
	}
	return layers, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readOnlyRoot makes the private root read-only but for the given paths, the
// way the unit's ProtectSystem=strict and ReadWritePaths do (/tmp stays a
// writable tmpfs, like PrivateTmp). The returned function undoes it.
func readOnlyRoot(t *testing.T, writable ...string) func() {
	t.Helper()
	if !inSandbox() {
		t.Fatal("readOnlyRoot outside the sandbox")
	}
	for _, p := range writable {
		if err := syscall.Mount(p, p, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("bind %s: %v", p, err)
		}
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount / read-only: %v", err)
	}
	if err := os.WriteFile("/etc/pspf-edge/ro-probe", nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write under / after the read-only remount: got %v, want EROFS", err)
	}
	return func() {
		var errs []error
		errs = append(errs, syscall.Mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_BIND, ""))
		for _, p := range writable {
			errs = append(errs, syscall.Unmount(p, 0))
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("undo the read-only root: %v", err)
		}
	}
}
