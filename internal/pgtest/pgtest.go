// Package pgtest starts throw-away PostgreSQL servers for tests: Debian's
// `postgresql` package (initdb and postgres from /usr/lib/postgresql/VER/bin),
// a cluster in a temporary directory, listening on a free loopback port and
// on no Unix socket, stopped and removed when the test ends. A test can stop
// the server, crash it (immediate shutdown: no checkpoint, crash recovery at
// the next start) and start it again on the same port and data.
//
// PostgreSQL refuses to run as root: when the tests run as root, initdb and
// the server run as the user nobody (through the process credentials, no
// su or sudo), in a directory owned by it. Nothing outside the temporary
// directory is touched, and no user is created.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// User and Password are the superuser of every cluster; connections over
// TCP must give the password (scram-sha-256).
const (
	User     = "pspf"
	Password = "pg-test-s3cret"
)

// Options configure a server.
type Options struct {
	// TLS turns on ssl with this server certificate and key (PEM); plain
	// connections are still accepted unless TLSOnly is set.
	TLS *TLS
	// Fsync keeps fsync on. Off by default: a crash of the server (not of
	// the machine) loses nothing without it, and tests run faster.
	Fsync bool
	// Extra lines for postgresql.conf.
	Extra []string
}

// TLS is the server side of TLS.
type TLS struct {
	CertFile, KeyFile string
	// TLSOnly refuses connections without TLS (hostssl in pg_hba.conf).
	TLSOnly bool
}

// Server is a PostgreSQL server owned by a test.
type Server struct {
	// Port is the loopback TCP port it listens on.
	Port int
	// Dir holds the cluster (Dir/data) and the server's log (Dir/server.log).
	Dir string

	t    testing.TB
	bin  string
	cred *syscall.Credential
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// BinDir returns the directory of Debian's PostgreSQL binaries (the newest
// version installed), or an error naming the package to install.
func BinDir() (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", errors.New("pgtest: initdb not found (apt-get install postgresql)")
	}
	sort.Slice(m, func(i, j int) bool { return version(m[i]) < version(m[j]) })
	return filepath.Dir(m[len(m)-1]), nil
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// Start initialises a cluster in a fresh temporary directory, starts the
// server and waits until it accepts connections. The server is stopped and
// the directory removed when the test ends; the server's log is printed if
// the test failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, Port: FreePort(t)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("pgtest: running as root and there is no user nobody to run postgres as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}
	}
	// t.TempDir's parents are private to root; the server's user must be
	// able to reach its own directory, so it gets one of its own in the
	// system's temporary directory.
	s.Dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(s.Dir) })
	s.own(s.Dir)
	pw := filepath.Join(s.Dir, "pwfile")
	if err := os.WriteFile(pw, []byte(Password+"\n"), 0o600); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s.own(pw)
	out, err := s.command(filepath.Join(bin, "initdb"), "-D", s.data(), "-U", User, "--pwfile", pw,
		"--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(s.Port),
		"unix_socket_directories = ''",
		"max_connections = 40",
		"shared_buffers = 32MB",
		"logging_collector = off",
		"log_min_messages = warning",
	}
	if !opts.Fsync {
		conf = append(conf, "fsync = off", "full_page_writes = off")
	}
	hba := "host all all 127.0.0.1/32 scram-sha-256\n"
	if opts.TLS != nil {
		cert, key := filepath.Join(s.data(), "server.crt"), filepath.Join(s.data(), "server.key")
		for src, dst := range map[string]string{opts.TLS.CertFile: cert, opts.TLS.KeyFile: key} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatalf("pgtest: %v", err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatalf("pgtest: %v", err)
			}
			s.own(dst)
		}
		conf = append(conf, "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'")
		if opts.TLS.TLSOnly {
			hba = "hostssl all all 127.0.0.1/32 scram-sha-256\n"
		}
	}
	conf = append(conf, opts.Extra...)
	s.appendFile("postgresql.conf", strings.Join(conf, "\n")+"\n")
	if err := os.WriteFile(filepath.Join(s.data(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s.own(filepath.Join(s.data(), "pg_hba.conf"))
	s.Restart()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(s.Dir, "server.log")); err == nil {
				t.Logf("postgres log:\n%s", lastLines(string(b), 40))
			}
		}
	})
	return s
}

// URL returns a postgres:// URL for database db (the default database when
// db is empty) as the superuser, with extra query parameters (like
// "sslmode=disable") appended.
func (s *Server) URL(db string, params ...string) string {
	if db == "" {
		db = "postgres"
	}
	u := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s", User, Password, s.Port, db)
	if len(params) > 0 {
		u += "?" + strings.Join(params, "&")
	}
	return u
}

// Addr returns 127.0.0.1:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

func (s *Server) data() string { return filepath.Join(s.Dir, "data") }

// Restart starts the server again (or for the first time) on the same port
// and cluster, and waits until it accepts connections (after crash
// recovery, if it crashed).
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("pgtest: postgres is already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
	defer logf.Close()
	// A port still held by the previous server's sockets, or its backends
	// still exiting after a crash: a server that exits is started again
	// until the deadline.
	deadline := time.Now().Add(30 * time.Second)
	started := wait.Until(time.Until(deadline), func() bool {
		cmd := s.command(filepath.Join(s.bin, "postgres"), "-D", s.data())
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("pgtest: start postgres: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		if s.waitReady(done, deadline) {
			s.cmd, s.done = cmd, done
			return true
		}
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-done
		return false
	})
	if !started {
		s.t.Fatalf("pgtest: postgres did not come up on port %d; log in %s", s.Port, s.Dir)
	}
}

// Stop shuts the server down (fast shutdown: sessions are ended, a
// checkpoint is written) and waits for it to exit. Clients see their
// connections closed with admin_shutdown (SQLSTATE 57P01).
func (s *Server) Stop() { s.signal(syscall.SIGINT) }

// Crash ends the server at once (immediate shutdown: no checkpoint, crash
// recovery at the next start), as after a kill of the server.
func (s *Server) Crash() { s.signal(syscall.SIGQUIT) }

// Pause freezes the server and its backends (SIGSTOP to each): connections
// stay open and nothing is answered, as with a server that hangs or a
// route that black-holes packets. A backend started while paused is not
// frozen (none is: the postmaster that would start it is). A test that
// pauses must Resume before the server is stopped.
func (s *Server) Pause() { s.all(syscall.SIGSTOP) }

// Resume thaws a paused server (SIGCONT).
func (s *Server) Resume() { s.all(syscall.SIGCONT) }

// all sends sig to the postmaster and its children. Each backend is a
// process group of its own (postgres calls setsid), so the children are
// found by their parent in /proc.
func (s *Server) all(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	pm := s.cmd.Process.Pid
	if sig == syscall.SIGSTOP {
		_ = syscall.Kill(pm, sig) // first, so that it starts no one new
	}
	for _, pid := range children(pm) {
		_ = syscall.Kill(pid, sig)
	}
	if sig != syscall.SIGSTOP {
		_ = syscall.Kill(pm, sig)
	}
}

// children returns the pids whose parent is ppid.
func children(ppid int) []int {
	dirs, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:])) // state, ppid, ...
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	for _, pid := range append(children(s.cmd.Process.Pid), s.cmd.Process.Pid) {
		_ = syscall.Kill(pid, syscall.SIGCONT) // in case it was paused
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// waitReady polls until the server accepts a TCP connection and answers a
// startup packet with something other than "the database system is
// starting up", or it exits, or the deadline passes.
func (s *Server) waitReady(exited <-chan struct{}, deadline time.Time) bool {
	isready := filepath.Join(s.bin, "pg_isready")
	ready := false
	wait.Until(time.Until(deadline), func() bool {
		select {
		case <-exited:
			return true // gives up
		default:
		}
		if _, err := os.Stat(isready); err == nil {
			ready = exec.Command(isready, "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", User, "-t", "1").Run() == nil
		} else if c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond); err == nil {
			c.Close()
			ready = true
		}
		return ready
	})
	return ready
}

// command runs name as the server's user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	// The parent-death signal is set after the credentials change, so
	// it holds for the server too: a test binary that is killed leaves
	// no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT}
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	return cmd
}

// own gives path to the server's user.
func (s *Server) own(path string) {
	if s.cred == nil {
		return
	}
	if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

func (s *Server) appendFile(name, text string) {
	f, err := os.OpenFile(filepath.Join(s.data(), name), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func lastLines(s string, n int) string {
	lines := bytes.Split([]byte(strings.TrimRight(s, "\n")), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
