package e2ebench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process: brokers and the agent under test.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// startProc starts argv with its output in logPath. The child gets SIGKILL
// if the harness dies first.
func startProc(name string, argv []string, env []string, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("e2ebench: %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("e2ebench: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: lf}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace before SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("e2ebench: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until something accepts connections on port, or p
// exits, or the timeout passes.
func waitListening(ctx context.Context, p *proc, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("e2ebench: %s exited (see %s)", p.name, p.log.Name())
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("e2ebench: %s: nothing listens on %d after %s", p.name, port, timeout)
}

// findMosquitto returns the mosquitto executable.
func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("e2ebench: mosquitto not found (apt-get install mosquitto)")
}

// mosquitto is a broker on a free loopback port, without persistence (it
// is never restarted), with an in-flight window of 1000 and unbounded
// queues, the same for the ceiling and the agent; with a TLS listener on
// a second port when asked (Config.MQTTTLS).
type mosquitto struct {
	*proc
	port    int
	tlsPort int    // 0: no TLS listener
	caFile  string // the PEM CA of the TLS listener's certificate
}

// startMosquitto starts a mosquitto with max_inflight_messages inflight
// (QoS 1 messages sent to one client and not yet acked; 0 means 1000),
// and with withTLS a TLS listener too, its certificate signed by a
// throw-away CA written into dir.
func startMosquitto(ctx context.Context, dir string, inflight int, withTLS bool) (*mosquitto, error) {
	if inflight <= 0 {
		inflight = 1000
	}
	bin, err := findMosquitto()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("e2ebench: %w", err)
	}
	conf := fmt.Sprintf("per_listener_settings false\nallow_anonymous true\npersistence false\n"+
		"max_inflight_messages %d\nmax_queued_messages 0\nmax_queued_bytes 0\n"+
		"log_dest stderr\nlog_type error\nlog_type warning\nlistener %d 127.0.0.1\n", inflight, port)
	m := &mosquitto{port: port}
	if withTLS {
		ca, cert, key, err := writeTLSCerts(dir)
		if err != nil {
			return nil, err
		}
		if m.tlsPort, err = freePort(); err != nil {
			return nil, err
		}
		m.caFile = ca
		conf += fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", m.tlsPort, ca, cert, key)
	}
	if os.Geteuid() == 0 {
		conf = "user root\n" + conf
	}
	cf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("e2ebench: %w", err)
	}
	p, err := startProc("mosquitto", []string{bin, "-c", cf}, nil, filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, err
	}
	for _, lp := range []int{port, m.tlsPort} {
		if lp == 0 {
			continue
		}
		if err := waitListening(ctx, p, lp, 10*time.Second); err != nil {
			p.stop(time.Second)
			return nil, err
		}
	}
	m.proc = p
	return m, nil
}

func (m *mosquitto) addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// kafkaBroker is internal/kafkatest/cmd/kfake-broker on a fixed port with
// its data in a directory, so that it can be stopped and started again with
// what it had accepted (the outage run).
type kafkaBroker struct {
	bin, dir string
	port     int
	topics   string
	p        *proc
}

func startKafka(ctx context.Context, bin, dir, topics string) (*kafkaBroker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	k := &kafkaBroker{bin: bin, dir: dir, port: port, topics: topics}
	return k, k.start(ctx)
}

func (k *kafkaBroker) addr() string { return "127.0.0.1:" + strconv.Itoa(k.port) }

// start runs the broker; it retries for a while because the port may be
// held for a moment after a stop.
func (k *kafkaBroker) start(ctx context.Context) error {
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		return fmt.Errorf("e2ebench: %w", err)
	}
	argv := []string{k.bin, "-port", strconv.Itoa(k.port), "-topics", k.topics, "-data-dir", filepath.Join(k.dir, "data")}
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := startProc("kfake-broker", argv, nil, filepath.Join(k.dir, "kfake.log"))
		if err != nil {
			return err
		}
		if err = waitListening(ctx, p, k.port, 10*time.Second); err == nil {
			k.p = p
			return nil
		}
		p.stop(time.Second)
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the broker (SIGTERM: it closes cleanly).
func (k *kafkaBroker) stop() {
	if k.p != nil {
		k.p.stop(10 * time.Second)
		k.p = nil
	}
}

// expand replaces {name} placeholders in s.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			break
		}
		name := s[i+1 : i+j]
		v, ok := vars[name]
		b.WriteString(s[:i])
		if ok {
			b.WriteString(v)
		} else {
			b.WriteString(s[i : i+j+1])
		}
		s = s[i+j+1:]
	}
	b.WriteString(s)
	return b.String()
}
