// Package testbroker starts real brokers for tests: a mosquitto process on a
// free loopback port, with persistence on, that a test can stop, kill and
// start again on the same port and data directory.
package testbroker

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// TLS is a TLS listener's files: the CA that signed the client certificates
// (and the server's), the server certificate and key, and whether clients must
// present a certificate.
type TLS struct {
	CAFile, CertFile, KeyFile string
	RequireClientCert         bool
}

// Options configure a mosquitto. The zero value is a plain listener with
// persistence, a large in-flight window and an unbounded offline queue.
type Options struct {
	// TLS adds a second, TLS listener when set.
	TLS *TLS
	// MaxInflight is mosquitto's max_inflight_messages (QoS 1/2 messages sent
	// to one client and not yet acknowledged); 0 means 1000.
	MaxInflight int
	// Extra is appended to the config file verbatim.
	Extra string
}

// Mosquitto is a mosquitto process owned by a test.
type Mosquitto struct {
	// Port is the plain listener's port; TLSPort the TLS listener's, if any.
	Port, TLSPort int
	// Dir holds the config, the persistence file and the log.
	Dir string

	t    testing.TB
	bin  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts mosquitto on free loopback ports and stops it when the test
// ends. It fails the test if mosquitto is not installed or does not come up.
func Start(t testing.TB, opts Options) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatalf("testbroker: mosquitto not found (apt-get install mosquitto): %v", err)
	}
	m := &Mosquitto{t: t, bin: bin, Dir: t.TempDir(), Port: FreePort(t)}
	if opts.MaxInflight == 0 {
		opts.MaxInflight = 1000
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "user root\nper_listener_settings false\nallow_anonymous true\n")
	fmt.Fprintf(&conf, "persistence true\npersistence_location %s/\nautosave_interval 1\n", m.Dir)
	fmt.Fprintf(&conf, "max_inflight_messages %d\nmax_queued_messages 0\nmax_queued_bytes 0\n", opts.MaxInflight)
	fmt.Fprintf(&conf, "log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n", filepath.Join(m.Dir, "mosquitto.log"))
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\n", m.Port)
	if opts.TLS != nil {
		m.TLSPort = FreePort(t)
		fmt.Fprintf(&conf, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %t\n",
			m.TLSPort, opts.TLS.CAFile, opts.TLS.CertFile, opts.TLS.KeyFile, opts.TLS.RequireClientCert)
	}
	conf.WriteString(opts.Extra)
	conf.WriteString("\n")
	if err := os.WriteFile(filepath.Join(m.Dir, "mosquitto.conf"), []byte(conf.String()), 0o600); err != nil {
		t.Fatalf("testbroker: %v", err)
	}
	m.Restart()
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(m.Dir, "mosquitto.log")); err == nil {
				t.Logf("mosquitto log:\n%s", lastLines(string(b), 40))
			}
		}
	})
	return m
}

// URL returns the plain listener's address as tcp://127.0.0.1:port.
func (m *Mosquitto) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.Port) }

// TLSURL returns the TLS listener's address as ssl://127.0.0.1:port.
func (m *Mosquitto) TLSURL() string { return "ssl://127.0.0.1:" + strconv.Itoa(m.TLSPort) }

// Restart starts mosquitto again (or for the first time) on the same ports and
// persistence file, and waits until it accepts connections.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatalf("testbroker: mosquitto is already running")
	}
	// The port can still be held by the previous process's sockets for a
	// moment after a kill: a mosquitto that exits at once is tried again.
	started := wait.Until(10*time.Second, func() bool {
		cmd := exec.Command(m.bin, "-c", filepath.Join(m.Dir, "mosquitto.conf"))
		// mosquitto logs to the file in Dir; its own stderr only says it runs as root.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			m.t.Fatalf("testbroker: start mosquitto: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		if waitListening(m.Port, done, 5*time.Second) {
			m.cmd, m.done = cmd, done
			return true
		}
		_ = cmd.Process.Kill()
		<-done
		return false
	})
	if !started {
		m.t.Fatalf("testbroker: mosquitto did not start listening on %d", m.Port)
	}
}

// Stop ends mosquitto with SIGTERM: it saves its persistence file first.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill ends mosquitto with SIGKILL: what it had not saved is lost.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

// Pause freezes mosquitto with SIGSTOP: its connections stay open and
// nothing is answered, as with a broker that hangs or a route that
// black-holes packets (clients see timeouts, not refusals). Resume thaws it;
// a test that pauses must resume before it ends.
func (m *Mosquitto) Pause() { m.send(syscall.SIGSTOP) }

// Resume continues a paused mosquitto (SIGCONT).
func (m *Mosquitto) Resume() { m.send(syscall.SIGCONT) }

// Reload makes mosquitto read its config again (SIGHUP): a test that
// rewrote its acl_file so changes what the broker authorises. It does not
// wait for the reload to be done.
func (m *Mosquitto) Reload() { m.send(syscall.SIGHUP) }

func (m *Mosquitto) send(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(sig)
	}
}

func (m *Mosquitto) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd, m.done = nil, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testbroker: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until port accepts connections; it gives up when
// the process exits (closes exited) or after timeout.
func waitListening(port int, exited <-chan struct{}, timeout time.Duration) bool {
	listening := false
	wait.Until(timeout, func() bool {
		select {
		case <-exited:
			return true // gives up
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			listening = true
		}
		return listening
	})
	return listening
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
