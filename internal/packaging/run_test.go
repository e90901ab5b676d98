package packaging

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// checkRun starts the installed agent the way systemd would start the unit,
// in the sandbox with its root read-only but for the unit's ReadWritePaths:
// ExecStart's argv, the unit's User and groups and Environment, / as working
// directory, a notify socket (which must get READY=1 and then WATCHDOG=1 from
// the main process) and a journal stream on stderr. Then it follows the
// first-run steps of docs/install.md: with no pipeline yet the agent idles;
// the shipped demo, copied to demo.yaml, must start writing into the data
// directory as the service user. It must live through SIGHUP (systemctl
// reload) and end cleanly, with STOPPING=1, on SIGTERM.
func checkRun(t *testing.T) {
	// ProtectSystem=strict: the agent may write only in the data directory
	// (and /tmp, a tmpfs of the sandbox's own as with PrivateTmp). The
	// pipelines directory stays writable for the test, not for the agent,
	// whose user may not write there anyway.
	defer readOnlyRoot(t, dataDir, "/etc/pspf-edge/pipelines")()
	u := parseUnit(t, unitPath)
	argv := u.execStart(t)
	// The shipped admin address is a fixed port; on a shared machine another
	// agent may hold it, so this run lets the kernel pick one.
	argv = append(argv, "--admin", "127.0.0.1:0")

	svc, err := user.Lookup(u.one(t, "Service", "User"))
	if err != nil {
		t.Fatal(err)
	}
	gids, err := svc.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	var groups []uint32
	for _, g := range gids {
		groups = append(groups, uint32(atoi(t, g)))
	}

	notify, notifyPath := listenNotify(t)
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderrW.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + svc.HomeDir, "USER=" + svc.Username, "LOGNAME=" + svc.Username, "SHELL=/usr/sbin/nologin",
		"NOTIFY_SOCKET=" + notifyPath,
		"WATCHDOG_USEC=1000000", // the unit says 30s; a second keeps the test short
		fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino),
	}, u.environment()...)
	cmd.Stderr = stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(atoi(t, svc.Uid)), Gid: uint32(atoi(t, svc.Gid)), Groups: groups,
	}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderrW.Close()
	logs := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(stderrR)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		logs <- lines
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			select {
			case lines := <-logs:
				t.Logf("agent log:\n%s", strings.Join(lines, "\n"))
			case <-time.After(5 * time.Second):
			}
		}
	}()

	pid := cmd.Process.Pid
	uid := atoi(t, svc.Uid)
	expectNotify(t, notify, pid, uid, "READY=1", 60*time.Second)
	expectNotify(t, notify, pid, uid, "WATCHDOG=1", 5*time.Second)
	expectNotify(t, notify, pid, uid, "WATCHDOG=1", 5*time.Second)

	// The first pipeline: the shipped demo, enabled as docs/install.md says.
	// The agent sees the new file by itself.
	demo := "/etc/pspf-edge/pipelines/demo.yaml"
	writeFile(t, demo, readFile(t, demo+".example"))
	defer os.Remove(demo)
	out := filepath.Join(dataDir, "demo.ndjson")
	waitLines(t, out, 4, 30*time.Second)
	checkOwner(t, out, svc.Username, svc.Username, 0o640)

	// systemctl reload: SIGHUP reloads; the agent goes on pinging and writing.
	cmd.Process.Signal(syscall.SIGHUP)
	expectNotify(t, notify, pid, uid, "WATCHDOG=1", 5*time.Second)
	n := countLines(out)
	waitLines(t, out, n+4, 30*time.Second)

	cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, notify, pid, uid, "STOPPING=1", 10*time.Second)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("agent exit after SIGTERM: got %v, want status 0", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("agent did not exit within 40s of SIGTERM")
	}

	// Journal format: a syslog priority on every log line, no timestamp.
	lines := <-logs
	if len(lines) == 0 {
		t.Fatal("agent logged nothing")
	}
	for _, line := range lines {
		if len(line) < 3 || line[0] != '<' || !strings.Contains("3467", line[1:2]) || line[2] != '>' || strings.Contains(line, "time=") {
			t.Errorf("log line %q: want a <N> priority prefix and no time", line)
		}
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "<6>level=INFO") }) {
		t.Errorf("no <6> info line in:\n%s", strings.Join(lines, "\n"))
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "SIGHUP") }) {
		t.Errorf("no line about the SIGHUP reload in:\n%s", strings.Join(lines, "\n"))
	}
}

// waitLines waits until path has at least n lines.
func waitLines(t *testing.T, path string, n int, within time.Duration) {
	t.Helper()
	if !wait.Until(within, func() bool { return countLines(path) >= n }) {
		t.Fatalf("%s: got %d lines after %v, want %d", path, countLines(path), within, n)
	}
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// listenNotify opens a notify socket that the service user may write to.
func listenNotify(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pspf-edge-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	// Like systemd, learn the sender's pid and uid from the kernel.
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn, path
}

// expectNotify reads datagrams until one is state, each of which must come
// from the main process (NotifyAccess=main) as the service user.
func expectNotify(t *testing.T, conn *net.UnixConn, pid, uid int, state string, within time.Duration) {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	conn.SetReadDeadline(time.Now().Add(within))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatalf("waiting for %s: %v", state, err)
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("notify credentials: %v (%d messages)", err, len(msgs))
		}
		cred, err := syscall.ParseUnixCredentials(&msgs[0])
		if err != nil {
			t.Fatal(err)
		}
		if int(cred.Pid) != pid || int(cred.Uid) != uid {
			t.Errorf("%q from pid %d uid %d, want the main process %d as uid %d", buf[:n], cred.Pid, cred.Uid, pid, uid)
		}
		if slices.Contains(strings.Split(string(buf[:n]), "\n"), state) {
			return
		}
		if !strings.HasPrefix(string(buf[:n]), "WATCHDOG=1") {
			t.Logf("notify: %s", strconv.Quote(string(buf[:n])))
		}
	}
}
