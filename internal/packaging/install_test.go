package packaging

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	pkg      = "pspf-edge"
	dataDir  = "/var/lib/pspf-edge"
	unitPath = "/lib/systemd/system/pspf-edge.service"
	wantsDir = "/etc/systemd/system/multi-user.target.wants"
)

// TestDebianPackage builds the packages and checks the ARM ones with
// dpkg-deb and qemu here; then it runs itself again in a private root (see
// sandbox_test.go) where it installs the amd64 package, checks what dpkg put
// where, runs the agent as the unit would, upgrades, removes and purges it.
// Nothing is installed on this machine: its packages, users and units are
// the same before and after, which the test checks too.
func TestDebianPackage(t *testing.T) {
	if inSandbox() {
		installRemovePurge(t, os.Getenv(debEnv), os.Getenv(upgradeEnv))
		return
	}
	requireTools(t, "dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "useradd", "qemu-arm-static", "qemu-aarch64-static")
	if os.Geteuid() != 0 {
		t.Fatal("the install test mounts a private root in namespaces of its own and needs root (scripts/deps.sh says so first)")
	}
	dist := t.TempDir()
	debs := buildPackages(t, dist)

	t.Run("arm packages", func(t *testing.T) {
		checkDebInfo(t, debs["armhf"], "armhf", "arm", "6", "qemu-arm-static")
		checkDebInfo(t, debs["arm64"], "arm64", "arm64", "", "qemu-aarch64-static")
		if got, want := debPaths(t, debs["armhf"]), debPaths(t, debs["amd64"]); !slices.Equal(got, want) {
			t.Errorf("armhf contents: got %q, want the amd64 package's %q", got, want)
		}
	})
	checkDebInfo(t, debs["amd64"], "amd64", "amd64", "", "")
	upgrade := bumpVersion(t, debs["amd64"], dist)

	before := hostState(t)
	runSandbox(t, dist, debs["amd64"], upgrade)
	if after := hostState(t); after != before {
		t.Errorf("this machine changed under the install test:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// installRemovePurge is the part of TestDebianPackage that runs in the
// sandbox: install, check, run, upgrade, remove, purge.
func installRemovePurge(t *testing.T, deb, upgrade string) {
	// The private root shows this machine's files: if it has the package
	// installed (a gateway), start from a clean slate, in the sandbox only.
	purge(t)
	dpkg(t, "-i", deb)
	if t.Failed() {
		t.FailNow()
	}
	t.Run("installed", checkInstalled)
	t.Run("unit", checkUnit)
	t.Run("doc", checkDoc)
	t.Run("validate shipped config", checkValidate)
	t.Run("run as the unit does", checkRun)

	t.Run("upgrade keeps edits and data", func(t *testing.T) {
		appendFile(t, "/etc/pspf-edge/agent.yaml", "# edited by the install test\n")
		writeFile(t, filepath.Join(dataDir, "keep-me"), "data\n")
		dpkg(t, "-i", "--force-confdef", "--force-confold", upgrade)
		if got := readFile(t, "/etc/pspf-edge/agent.yaml"); !strings.HasSuffix(got, "# edited by the install test\n") {
			t.Errorf("agent.yaml after upgrade: got %q, want the edit kept", tail(got))
		}
		checkInstalled(t)
		// The maintainer script once more, as dpkg --configure would after
		// an interrupted run: nothing changes.
		run(t, "/var/lib/dpkg/info/pspf-edge.postinst", "configure", "1.0.1")
		checkInstalled(t)
		checkOwner(t, filepath.Join(dataDir, "keep-me"), "root", "root", 0o644)
	})

	t.Run("remove keeps config, data and user", func(t *testing.T) {
		dpkg(t, "-r", pkg)
		for _, p := range []string{"/usr/bin/pspf-edge", unitPath} {
			mustNotExist(t, p)
		}
		if got := readFile(t, "/etc/pspf-edge/agent.yaml"); !strings.Contains(got, "# edited by the install test") {
			t.Errorf("agent.yaml after remove: got %q, want it kept with the edit", tail(got))
		}
		checkOwner(t, filepath.Join(dataDir, "keep-me"), "root", "root", 0o644)
		checkOwner(t, dataDir, pkg, pkg, 0o750|os.ModeDir)
		if _, err := user.Lookup(pkg); err != nil {
			t.Errorf("user after remove: %v, want it kept", err)
		}
		if got := dpkgStatus(t); got != "deinstall ok config-files" {
			t.Errorf("dpkg status after remove: got %q, want deinstall ok config-files", got)
		}
	})

	t.Run("purge removes everything", func(t *testing.T) {
		dpkg(t, "-P", pkg)
		for _, p := range []string{"/etc/pspf-edge", dataDir, filepath.Join(wantsDir, "pspf-edge.service"), "/etc/systemd/system/pspf-edge.service"} {
			mustNotExist(t, p)
		}
		if _, err := user.Lookup(pkg); err == nil {
			t.Error("user pspf-edge still exists after purge")
		}
		if groupExists(pkg) {
			t.Error("group pspf-edge still exists after purge")
		}
		if got := dpkgStatus(t); got != "" {
			t.Errorf("dpkg status after purge: got %q, want not installed", got)
		}
	})
}

// hostState sums up what an install would change on this machine: the
// package's dpkg status, the users and groups it creates, its files and its
// unit's enablement.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "dpkg status: %q\n", dpkgStatus(t))
	for _, f := range []string{"/etc/passwd", "/etc/group"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, pkg+":") || strings.HasPrefix(line, "gpio:") {
				fmt.Fprintf(&b, "%s: %s\n", f, line)
			}
		}
	}
	for _, p := range []string{"/usr/bin/pspf-edge", "/etc/pspf-edge", dataDir, unitPath, filepath.Join(wantsDir, "pspf-edge.service"), "/var/lib/dpkg/info/pspf-edge.list"} {
		if fi, err := os.Lstat(p); err == nil {
			fmt.Fprintf(&b, "%s: %v %s\n", p, fi.Mode(), fi.ModTime().Format(time.RFC3339Nano))
		} else {
			fmt.Fprintf(&b, "%s: absent\n", p)
		}
	}
	return b.String()
}

// checkInstalled checks the files, owners, modes, conffiles, user and groups
// of an installed package.
func checkInstalled(t *testing.T) {
	if got := dpkgStatus(t); got != "install ok installed" {
		t.Fatalf("dpkg status: got %q, want install ok installed", got)
	}
	for _, f := range []struct {
		path  string
		owner string
		mode  os.FileMode
	}{
		{"/usr/bin/pspf-edge", "root", 0o755},
		{"/etc/pspf-edge", "root", 0o755 | os.ModeDir},
		{"/etc/pspf-edge/agent.yaml", "root", 0o644},
		{"/etc/pspf-edge/pipelines", "root", 0o755 | os.ModeDir},
		{"/etc/pspf-edge/pipelines/demo.yaml.example", "root", 0o644},
		{unitPath, "root", 0o644},
		{"/lib/udev/rules.d/60-pspf-edge-gpio.rules", "root", 0o644},
		{"/usr/share/doc/pspf-edge/install.md", "root", 0o644},
		{"/usr/share/doc/pspf-edge/security.md", "root", 0o644},
		{"/usr/share/doc/pspf-edge/copyright", "root", 0o644},
		{"/usr/share/doc/pspf-edge/changelog.gz", "root", 0o644},
		{"/usr/share/doc/pspf-edge/examples/window-mean.yaml", "root", 0o644},
		{"/usr/share/doc/pspf-edge/examples/serial-sensor.yaml", "root", 0o644},
		{dataDir, pkg, 0o750 | os.ModeDir},
	} {
		checkOwner(t, f.path, f.owner, f.owner, f.mode)
	}
	// Nothing in the pipelines directory runs until the user enables it.
	if files, _ := filepath.Glob("/etc/pspf-edge/pipelines/*.y*ml"); len(files) != 0 {
		t.Errorf("pipelines enabled by the package: %q, want none", files)
	}

	conf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", pkg)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(conf), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			got = append(got, f[0])
		}
	}
	slices.Sort(got)
	if want := []string{"/etc/pspf-edge/agent.yaml", "/etc/pspf-edge/pipelines/demo.yaml.example"}; !slices.Equal(got, want) {
		t.Errorf("conffiles: got %q, want %q", got, want)
	}

	u, err := user.Lookup(pkg)
	if err != nil {
		t.Fatalf("service user: %v", err)
	}
	if u.HomeDir != dataDir {
		t.Errorf("home of %s: got %s, want %s", pkg, u.HomeDir, dataDir)
	}
	if pw := run(t, "getent", "passwd", pkg); !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("passwd entry: got %q, want shell /usr/sbin/nologin", pw)
	}
	if uid := atoi(t, u.Uid); uid >= 1000 || uid == 0 {
		t.Errorf("uid of %s: got %d, want a system uid", pkg, uid)
	}
	groups := strings.Fields(run(t, "id", "-nG", pkg))
	slices.Sort(groups)
	if want := []string{"dialout", "gpio", pkg}; !slices.Equal(groups, want) {
		t.Errorf("groups of %s: got %q, want %q", pkg, groups, want)
	}
	// Enabled, as deb-systemd-helper does it where systemd does not run.
	if target, err := os.Readlink(filepath.Join(wantsDir, "pspf-edge.service")); err != nil || target != unitPath {
		t.Errorf("enable link: got %q, %v, want %s", target, err, unitPath)
	}
}

// checkUnit reads the installed unit and lets systemd-analyze check it.
func checkUnit(t *testing.T) {
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unitPath).CombinedOutput()
	if err != nil || strings.Contains(string(out), "pspf-edge") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The exposure score of the sandbox, offline (no systemd runs here):
	// 0 is fully locked down, 10 is not at all. Ours is below 3 ("OK").
	sec, _ := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", unitPath).CombinedOutput()
	var score float64
	for _, line := range strings.Split(string(sec), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "→ Overall exposure level for pspf-edge.service:"); ok {
			fmt.Sscan(rest, &score)
		}
	}
	if score <= 0 || score >= 3 {
		t.Errorf("systemd-analyze security: got exposure %.1f, want between 0 and 3\n%s", score, sec)
	}

	u := parseUnit(t, unitPath)
	for _, kv := range []struct{ key, want string }{
		{"Type", "notify"}, {"NotifyAccess", "main"}, {"Restart", "on-failure"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"}, {"User", pkg}, {"Group", pkg},
		{"ProtectSystem", "strict"}, {"ReadWritePaths", dataDir}, {"NoNewPrivileges", "yes"},
		{"PrivateTmp", "yes"}, {"ProtectHome", "yes"}, {"DevicePolicy", "closed"},
		{"SupplementaryGroups", "dialout gpio"},
	} {
		if got := u.one(t, "Service", kv.key); got != kv.want {
			t.Errorf("unit %s: got %q, want %q", kv.key, got, kv.want)
		}
	}
	allow := u["Service"]["DeviceAllow"]
	for _, want := range []string{"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw", "char-ttyAMA rw", "char-gpiochip rw"} {
		if !slices.Contains(allow, want) {
			t.Errorf("unit DeviceAllow: got %q, want %q among them", allow, want)
		}
	}
	if d, err := time.ParseDuration(u.one(t, "Service", "WatchdogSec")); err != nil || d < 10*time.Second {
		t.Errorf("unit WatchdogSec: got %v, %v, want at least 10s", d, err)
	}
	memMax, err := parseBytes(u.one(t, "Service", "MemoryMax"))
	if err != nil {
		t.Fatal(err)
	}
	var limit int64
	for _, kv := range u.environment() {
		if v, ok := strings.CutPrefix(kv, "GOMEMLIMIT="); ok {
			if limit, err = parseBytes(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if limit < memMax*7/10 || limit >= memMax {
		t.Errorf("GOMEMLIMIT %d with MemoryMax %d: want 70%%..100%% of it", limit, memMax)
	}
	if argv := u.execStart(t); argv[0] != "/usr/bin/pspf-edge" || !slices.Contains(argv, "/etc/pspf-edge/agent.yaml") {
		t.Errorf("unit ExecStart: got %q, want /usr/bin/pspf-edge with /etc/pspf-edge/agent.yaml", argv)
	}
	// The agent file must point where the sandbox lets the agent write.
	if cfg := readFile(t, "/etc/pspf-edge/agent.yaml"); !strings.Contains(cfg, "\ndata_dir: "+dataDir+"\n") || !strings.Contains(cfg, "\npipelines_dir: /etc/pspf-edge/pipelines\n") {
		t.Errorf("agent.yaml: want data_dir %s and pipelines_dir /etc/pspf-edge/pipelines:\n%s", dataDir, cfg)
	}
}

// checkValidate runs pspf-edge validate on the shipped config and examples.
func checkValidate(t *testing.T) {
	run(t, "/usr/bin/pspf-edge", "validate", "-c", "/etc/pspf-edge/agent.yaml", "/etc/pspf-edge/pipelines")
	demo := filepath.Join(t.TempDir(), "demo.yaml")
	writeFile(t, demo, readFile(t, "/etc/pspf-edge/pipelines/demo.yaml.example"))
	out := run(t, "/usr/bin/pspf-edge", "validate", "-c", "/etc/pspf-edge/agent.yaml", demo, "/usr/share/doc/pspf-edge/examples")
	examples, _ := filepath.Glob("/usr/share/doc/pspf-edge/examples/*.yaml")
	if got, want := strings.Count(out, ": ok"), 1+len(examples); got != want || len(examples) < 2 {
		t.Errorf("validate: got %d valid files, want %d (the demo and %d examples):\n%s", got, want, len(examples), out)
	}
}

// checkDoc checks the files Debian's policy asks of every package, and that
// every pipeline the package ships writes inside the data directory: the
// unit's sandbox (ProtectSystem=strict) lets the agent write nowhere else,
// and a relative path would resolve against the unit's working directory, /.
func checkDoc(t *testing.T) {
	changelog := run(t, "sh", "-c", "zcat /usr/share/doc/pspf-edge/changelog.gz")
	lines := strings.Split(strings.TrimSpace(changelog), "\n")
	if len(lines) < 5 || lines[0] != "pspf-edge (1.0.0) unstable; urgency=medium" || !strings.HasPrefix(lines[2], "  * ") ||
		!regexp.MustCompile(`^ -- .+ <.+>  \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$`).MatchString(lines[len(lines)-1]) {
		t.Errorf("changelog.gz: not a Debian changelog entry for 1.0.0:\n%s", changelog)
	}
	copyright := readFile(t, "/usr/share/doc/pspf-edge/copyright")
	for _, want := range []string{"pspf-edge", "==== Go go1.", "==== gopkg.in/yaml.v3 ", "==== go.etcd.io/bbolt "} {
		if !strings.Contains(copyright, want) {
			t.Errorf("copyright: no %q in it", want)
		}
	}
	shipped, _ := filepath.Glob("/usr/share/doc/pspf-edge/examples/*.yaml")
	shipped = append(shipped, "/etc/pspf-edge/pipelines/demo.yaml.example")
	filePath := regexp.MustCompile(`(?m)\bfile:\s*(?:\{\s*|\n\s+)path:\s*"?([^",}\s]+)`)
	found := 0
	for _, f := range shipped {
		for _, m := range filePath.FindAllStringSubmatch(readFile(t, f), -1) {
			found++
			if !strings.HasPrefix(m[1], dataDir+"/") {
				t.Errorf("%s: a file sink writes to %q, outside %s where the unit lets the agent write", f, m[1], dataDir)
			}
		}
	}
	if found == 0 {
		t.Errorf("no file sink in %q; the demo has one", shipped)
	}
}

// requireTools fails the test (it must not skip) if a tool is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for the install test: %v (scripts/deps.sh installs it)", tool, err)
		}
	}
}

// buildPackages runs packaging/package.sh for amd64, armv6 (armhf) and arm64
// into dist and returns the .deb files by Debian architecture.
func buildPackages(t *testing.T, dist string) map[string]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "packaging/package.sh"), "amd64", "armv6", "arm64")
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION=1.0.0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("package.sh: %v\n%s", err, out)
	}
	debs := map[string]string{}
	for _, arch := range []string{"amd64", "armhf", "arm64"} {
		p := filepath.Join(dist, "pspf-edge_1.0.0_"+arch+".deb")
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("package %s: %v", arch, err)
		}
		debs[arch] = p
	}
	tgz := filepath.Join(dist, "pspf-edge-1.0.0-linux-armv6.tar.gz")
	list := run(t, "tar", "-tzf", tgz)
	for _, want := range []string{"/pspf-edge", "/agent.yaml", "/pspf-edge.service", "/pipelines/demo.yaml.example", "/install.md", "/security.md", "/copyright", "/changelog.gz", "/examples/serial-sensor.yaml"} {
		if !strings.Contains(list, "pspf-edge-1.0.0-linux-armv6"+want+"\n") {
			t.Errorf("%s: no %s in\n%s", tgz, want, list)
		}
	}
	if strings.Contains(list, "/examples/demo.yaml") {
		t.Errorf("%s: ships examples/demo.yaml, which writes to a relative path:\n%s", tgz, list)
	}
	return debs
}

// checkDebInfo checks a package's control fields and binary with dpkg-deb,
// and runs the binary (under qemu if given).
func checkDebInfo(t *testing.T, deb, arch, goarch, goarm, qemu string) {
	t.Helper()
	info := run(t, "dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: pspf-edge\n", "Architecture: " + arch + "\n", "Version: 1.0.0\n", "Depends: passwd\n", " postinst", " prerm", " postrm", " conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("%s: info has no %q:\n%s", filepath.Base(deb), strings.TrimSpace(want), info)
		}
	}
	if got := run(t, "dpkg-deb", "--info", deb, "conffiles"); got != "/etc/pspf-edge/agent.yaml\n/etc/pspf-edge/pipelines/demo.yaml.example\n" {
		t.Errorf("%s: conffiles: got %q", filepath.Base(deb), got)
	}
	contents := run(t, "dpkg-deb", "--contents", deb)
	if !strings.Contains(contents, "-rwxr-xr-x root/root") || !strings.Contains(contents, " ./usr/bin/pspf-edge\n") {
		t.Errorf("%s: want /usr/bin/pspf-edge 0755 root:\n%s", filepath.Base(deb), contents)
	}
	bin := filepath.Join(t.TempDir(), "pspf-edge")
	data, err := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -xO ./usr/bin/pspf-edge`, "sh", deb).Output()
	if err != nil {
		t.Fatalf("extract binary from %s: %v", deb, err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("%s: build info: %v", filepath.Base(deb), err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOARCH"] != goarch || settings["GOARM"] != goarm || settings["CGO_ENABLED"] != "0" {
		t.Errorf("%s: got GOARCH=%s GOARM=%s CGO_ENABLED=%s, want %s %q 0", filepath.Base(deb), settings["GOARCH"], settings["GOARM"], settings["CGO_ENABLED"], goarch, goarm)
	}
	argv := []string{bin, "version"}
	if qemu != "" {
		argv = append([]string{qemu}, argv...)
	}
	if out := run(t, argv...); !strings.Contains(out, "pspf-edge 1.0.0\n") || !strings.Contains(out, "linux/"+goarch) {
		t.Errorf("%s: version: got %q", filepath.Base(deb), out)
	}
}

// debPaths lists the paths in a package.
func debPaths(t *testing.T, deb string) []string {
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(line)
		paths = append(paths, f[len(f)-1])
	}
	slices.Sort(paths)
	return paths
}

// bumpVersion repacks deb as version 1.0.1 into dist, for an upgrade of the
// same files.
func bumpVersion(t *testing.T, deb, dist string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pkg")
	run(t, "dpkg-deb", "-R", deb, dir)
	control := filepath.Join(dir, "DEBIAN", "control")
	writeFile(t, control, strings.Replace(readFile(t, control), "Version: 1.0.0\n", "Version: 1.0.1\n", 1))
	out := filepath.Join(dist, "pspf-edge_1.0.1_amd64.deb")
	run(t, "dpkg-deb", "--root-owner-group", "-Znone", "-b", dir, out) // no compression: seconds, not a minute
	return out
}

// dpkg runs dpkg, only ever in the sandbox (where no other dpkg runs).
func dpkg(t *testing.T, args ...string) {
	t.Helper()
	if !inSandbox() {
		t.Fatalf("dpkg %s outside the sandbox: refused", strings.Join(args, " "))
	}
	cmd := exec.Command("dpkg", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// purge removes the package if it is there at all.
func purge(t *testing.T) {
	t.Helper()
	if dpkgStatus(t) != "" {
		dpkg(t, "-P", pkg)
	}
}

// dpkgStatus returns the package's dpkg status, "" if dpkg does not know it.
func dpkgStatus(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	if err != nil || strings.Contains(string(out), "not-installed") {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func run(t *testing.T, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(argv, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

func checkOwner(t *testing.T, path, owner, group string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	u, _ := user.LookupId(fmt.Sprint(st.Uid))
	g, _ := user.LookupGroupId(fmt.Sprint(st.Gid))
	if u == nil || g == nil || u.Username != owner || g.Name != group || fi.Mode() != mode {
		t.Errorf("%s: got %v %d:%d, want %v %s:%s", path, fi.Mode(), st.Uid, st.Gid, mode, owner, group)
	}
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("%s: exists, want it gone", path)
	}
}

func groupExists(name string) bool {
	_, err := user.LookupGroup(name)
	return err == nil
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("number %q: %v", s, err)
	}
	return n
}

func tail(s string) string {
	return s[max(0, len(s)-80):]
}
