package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// fakeClock is the client's clock in the storm tests: sleep returns at
// once and moves the clock on by the wait it was asked for, so that the
// waits can be counted and summed without waiting them.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err() == nil
}

func (c *fakeClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// logRecorder is a slog handler that keeps every record as a line of text.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
	warns int
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String()); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, b.String())
	if r.Level >= slog.LevelWarn {
		l.warns++
	}
	return nil
}

// text returns the lines logged so far and how many were WARN or worse.
func (l *logRecorder) text() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n"), l.warns
}

// errRecorder collects what the source reports through Env.ReportError.
type errRecorder struct {
	mu   sync.Mutex
	errs []string
}

func (e *errRecorder) report(err error) {
	if err == nil {
		return // recovered: nothing to record
	}
	e.mu.Lock()
	e.errs = append(e.errs, err.Error())
	e.mu.Unlock()
}

func (e *errRecorder) text() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.errs, "\n")
}

// hostileBroker accepts every CONNECT and acknowledges the SUBSCRIBE. On
// its first `bad` connections it then sends bad and closes the connection
// (an empty bad: it closes at once, as mosquitto does when another client
// takes the session over); it keeps the next one open, quiet, and reports
// on calm that the storm is over.
func hostileBroker(t *testing.T, bad []byte, sessions int) (url string, calm <-chan struct{}) {
	t.Helper()
	quiet := make(chan struct{})
	var once sync.Once
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, ok := mqtttest.Subscribe(c, r, 1); !ok {
			return
		}
		if n > sessions {
			once.Do(func() { close(quiet) })
			_, _ = io.Copy(io.Discard, r)
			return
		}
		_, _ = c.Write(bad)
	})
	return fb.URL(), quiet
}

// stormSource is a source on the real client whose reconnect loop runs on
// clk, logging to lr and reporting errors to er.
func stormSource(t *testing.T, urls []string, clk *fakeClock, lr *logRecorder, er *errRecorder) (*Source, *runner.Metrics) {
	t.Helper()
	cfg := *Defaults()
	cfg.ProtocolVersion = "3.1.1" // the hostile brokers speak 3.1.1 and answer any CONNECT in it
	cfg.Brokers = urls
	cfg.ClientID = "t-storm"
	cfg.Subscriptions = []Subscription{{Topic: "s/#", QoS: 1}}
	return clockSource(t, cfg, clk, lr, er.report, 0)
}

// clockSource is a connected source of cfg on the real client whose
// reconnect loop runs on clk, logging to lr and reporting errors through
// report; a subTimeout other than 0 replaces the SUBACK timeout. Close
// runs at the test's end.
func clockSource(t *testing.T, cfg Config, clk *fakeClock, lr *logRecorder, report func(error), subTimeout time.Duration) (*Source, *runner.Metrics) {
	t.Helper()
	m := runner.NewMetrics()
	env := agent.Env{Pipeline: "p", Component: "mqtt", AgentName: "a", Metrics: m,
		Logger: slog.New(lr), ReportError: report}
	dial := func(cfg *Config, id string, tc *tls.Config, h handlers) broker {
		o := clientOptions(cfg, id, tc)
		o.Now, o.Sleep = clk.now, clk.sleep
		return newClient(o, h)
	}
	s, err := newSource(cfg, env, dial)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if subTimeout != 0 {
		s.subTimeout = subTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, m
}

// backoffStep is the ceiling of the i-th wait (from 0) of a reconnect
// sequence that never starts over: 250ms doubled up to max.
func backoffStep(i int, max time.Duration) time.Duration {
	d := mqttc.ReconnectDelay
	for ; i > 0 && d < max; i-- {
		d *= 2
	}
	return min(d, max)
}

// maxReconnectsWithin is how many reconnects the backoff allows within w:
// each wait is at least half its step.
func maxReconnectsWithin(w, max time.Duration) int {
	n := 0
	for sum := backoffStep(0, max) / 2; sum <= w; sum += backoffStep(n, max) / 2 {
		n++
	}
	return n
}

// TestHostileBrokerBacksOff runs the source against a broker that accepts
// every connection and then breaks it, in each way a broker can break
// MQTT 3.1.1 (and by closing it without a word, as on a session takeover).
// The reconnects must back off exponentially up to max_reconnect_interval
// without ever starting over (no session lives a keepalive), the cause
// must be named in the log and counted, and the WARN lines must stay at
// one per episode and cause plus one summary a minute.
func TestHostileBrokerBacksOff(t *testing.T) {
	const sessions = 10
	for _, tc := range []struct {
		name, bad   string
		cause, logs string
	}{
		{"malformed remaining length", "\x30\xff\xff\xff\xff\x01", "protocol_violation", "malformed remaining length"},
		{"truncated packet", "\x30\x07\x00\x03a", "protocol_violation", "truncated packet"},
		{"qos 3", "\x36\x05\x00\x03a/b", "protocol_violation", "QoS 3"},
		{"bad topic length", "\x30\x03\x00\x05a", "protocol_violation", "topic of 5 bytes"},
		{"unknown packet type", "\xf0\x00", "protocol_violation", "packet type 15"},
		{"qos 1 packet id 0", "\x32\x08\x00\x03a/b\x00\x00x", "protocol_violation", "packet id 0"},
		{"closed without error", "", "takeover", "taken over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, calm := hostileBroker(t, []byte(tc.bad), sessions)
			clk, lr, er := newFakeClock(), &logRecorder{}, &errRecorder{}
			s, m := stormSource(t, []string{url}, clk, lr, er)
			select {
			case <-calm:
			case <-time.After(20 * time.Second):
				t.Fatalf("only %d waits in 20s: %v", len(clk.recorded()), clk.recorded())
			}
			_ = s.Close(context.Background())
			waits := clk.recorded()
			if len(waits) != sessions {
				t.Fatalf("%d waits, want one per reconnect (%d): %v", len(waits), sessions, waits)
			}
			var elapsed time.Duration
			in20s := 0
			for i, w := range waits {
				step := backoffStep(i, s.cfg.MaxReconnect)
				if w < step/2 || w > step {
					t.Errorf("wait %d is %v, want within [%v, %v]: the backoff must grow and never start over (%v)", i, w, step/2, step, waits)
				}
				elapsed += w
				if elapsed <= 20*time.Second {
					in20s++
				}
			}
			if limit := maxReconnectsWithin(20*time.Second, s.cfg.MaxReconnect); in20s > limit {
				t.Errorf("%d reconnects within 20s, want at most %d", in20s, limit)
			}
			logs, warns := lr.text()
			if !strings.Contains(logs, tc.logs) {
				t.Errorf("log does not name %q:\n%s", tc.logs, logs)
			}
			if limit := 1 + int(elapsed/time.Minute); warns > limit {
				t.Errorf("%d WARN lines over %v of reconnects, want at most %d (one per episode, one summary a minute):\n%s", warns, elapsed, limit, logs)
			}
			want := fmt.Sprintf(`pspf_mqtt_connections_lost_total{pipeline="p",component="mqtt",cause=%q} %d`, tc.cause, sessions)
			if got := metricLine(m, "pspf_mqtt_connections_lost_total"); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if got := er.text(); !strings.Contains(got, tc.logs) {
				t.Errorf("reported errors %q, want one naming %q", got, tc.logs)
			}
			if got := metricLine(m, "pspf_mqtt_messages_total"); got != "" && !strings.HasSuffix(got, " 0") {
				t.Errorf("got %q, want no message taken from a broken packet", got)
			}
		})
	}
}

// TestReconnectBackoffStartsOverAfterStableSession checks that a session
// that lived a keepalive resets the backoff, and one that did not leaves
// it growing.
func TestReconnectBackoffStartsOverAfterStableSession(t *testing.T) {
	const held = 4 // the connection that stays up until the test moves the clock
	clk := newFakeClock()
	holding, release := make(chan struct{}), make(chan struct{})
	calm := make(chan struct{})
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, ok := mqtttest.Subscribe(c, r, 1); !ok {
			return
		}
		switch {
		case n == held:
			close(holding) // subscribed: the client has adopted the connection
			<-release
		case n > held+2:
			close(calm)
			_, _ = io.Copy(io.Discard, r)
			return
		}
		_, _ = c.Write([]byte("\x36\x05\x00\x03a/b")) // QoS 3
	})
	lr := &logRecorder{}
	s, _ := stormSource(t, []string{fb.URL()}, clk, lr, &errRecorder{})
	select {
	case <-holding:
	case <-time.After(20 * time.Second):
		t.Fatalf("connection %d not reached: waits %v", held, clk.recorded())
	}
	clk.advance(s.cfg.KeepAlive) // the held session lives a keepalive
	close(release)
	select {
	case <-calm:
	case <-time.After(20 * time.Second):
		t.Fatalf("the storm did not end: waits %v", clk.recorded())
	}
	_ = s.Close(context.Background())
	waits := clk.recorded()
	want := []int{0, 1, 2, 0, 1, 2} // the step of each wait: it starts over after the held session
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %d", waits, len(want))
	}
	for i, w := range waits {
		step := backoffStep(want[i], s.cfg.MaxReconnect)
		if w < step/2 || w > step {
			t.Errorf("wait %d is %v, want within [%v, %v] (waits %v)", i, w, step/2, step, waits)
		}
	}
	if logs, warns := lr.text(); warns != 2 {
		t.Errorf("%d WARN lines, want 2 (one per episode):\n%s", warns, logs)
	}
}

// queuedLen returns how many messages wait for Read.
func (s *Source) queuedLen() int {
	s.queue.mu.Lock()
	defer s.queue.mu.Unlock()
	return len(s.queue.in)
}

// TestSilentCloseByLeavingBrokerIsNoTakeover checks the other side of the
// takeover heuristic: a connection closed without a word by a broker that
// then refuses connections (it stopped), or after which another broker of
// the list answers (failover), is counted as closed_by_broker.
func TestSilentCloseByLeavingBrokerIsNoTakeover(t *testing.T) {
	for _, failover := range []bool{false, true} {
		t.Run(fmt.Sprintf("failover=%t", failover), func(t *testing.T) {
			// One connection: CONNACK, SUBACK, then the broker goes away.
			urls := []string{mqtttest.Once(t, func(c net.Conn, r *bufio.Reader) {
				if mqtttest.Handshake(c, r) {
					mqtttest.Subscribe(c, r, 1)
				}
			})}
			if failover {
				backup, _ := hostileBroker(t, nil, 0)
				urls = append(urls, backup)
			}
			clk, lr := newFakeClock(), &logRecorder{}
			s, m := stormSource(t, urls, clk, lr, &errRecorder{})
			const closed = `pspf_mqtt_connections_lost_total{pipeline="p",component="mqtt",cause="closed_by_broker"}`
			if !wait.Until(20*time.Second, func() bool { return metricValue(t, m, closed) > 0 }) {
				logs, _ := lr.text()
				t.Fatalf("no loss counted as closed_by_broker:\n%s", logs)
			}
			_ = s.Close(context.Background())
			if got := metricLine(m, "pspf_mqtt_connections_lost_total"); !strings.HasPrefix(got, closed+" 1") {
				t.Errorf("got %q, want one loss, closed_by_broker", got)
			}
			if logs, _ := lr.text(); strings.Contains(logs, "taken over") {
				t.Errorf("log names a takeover:\n%s", logs)
			}
		})
	}
}

// goroutines counts the goroutines whose stack holds fn.
func goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// clientGoroutines are the functions the client runs on goroutines of its own.
var clientGoroutines = []string{"mqttc.(*session).read(", "mqttc.(*session).ping(", "mqttc.(*bufConn).sender(", "mqttc.(*Client).reconnect("}

// TestCloseJoinsReader checks that Disconnect returns only after the
// reader of its connection has ended, even while the reader waits for
// room under max_in_flight: a nack's reconnect leaves one reader, Close
// none. No polling after Close: it must already have joined them.
func TestCloseJoinsReader(t *testing.T) {
	for _, fn := range clientGoroutines {
		if n := goroutines(fn); n != 0 {
			t.Fatalf("%d goroutines in %s before the test", n, fn)
		}
	}
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, ok := mqtttest.Subscribe(c, r, 1); !ok {
			return
		}
		if n == 1 {
			for i := range 6 {
				p := &mqttc.Publication{Topic: "s/x", QoS: 1, Payload: []byte{byte('0' + i)}}
				if _, err := c.Write(mqttc.EncodePublish(false, p, uint16(i+1))); err != nil {
					return
				}
			}
		}
		_, _ = io.Copy(io.Discard, r)
	})
	cfg := *Defaults()
	cfg.ProtocolVersion = "3.1.1" // the scripted broker answers any CONNECT in 3.1.1
	cfg.Brokers = []string{fb.URL()}
	cfg.ClientID = "t-join"
	cfg.Subscriptions = []Subscription{{Topic: "s/#", QoS: 1}}
	cfg.MaxInFlight, cfg.BatchSize, cfg.Linger = 2, 2, 0
	s, err := New(cfg, agent.Env{Pipeline: "p", Component: "mqtt", AgentName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	// With linger 0 a Read takes what is queued: wait for both.
	wait.For(t, 10*time.Second, "the first two messages queued", func() bool { return s.queuedLen() == 2 })
	recs, ack, err := s.Read(ctx)
	if err != nil || len(recs) != 2 {
		t.Fatalf("read: %d records, %v", len(recs), err)
	}
	ack(ctx, fmt.Errorf("not durable")) // the next Read reconnects
	wait.For(t, 10*time.Second, "the reader to queue the third and fourth messages and wait for room for the fifth", func() bool {
		return s.queuedLen() == 2 && goroutines("mqtt.(*inQueue).acquire(") > 0
	})
	if _, ack, err = s.Read(ctx); err != nil {
		t.Fatalf("read after the nack: %v", err)
	}
	ack(ctx, nil)
	if n := goroutines("mqttc.(*session).read("); n != 1 {
		t.Errorf("%d readers after the reconnect, want 1: the old connection's reader was not joined", n)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, fn := range clientGoroutines {
		if n := goroutines(fn); n != 0 {
			t.Errorf("%d goroutines in %s after Close, want 0", n, fn)
		}
	}
}

// TestMosquittoTakeoverNamedAndBounded runs two sources with the same
// client_id against a real mosquitto: each connect takes the session from
// the other (mosquitto closes the older connection without a word). Each
// source must name the takeover in its log and in its reported error,
// count it, and back off: each source's reconnect loop runs on a fake clock
// of its own, and the waits it asked for must follow the backoff (each at
// least half its step, never starting over), not the four a second of a
// fixed retry delay. The fight goes on until each has waited `rounds` times.
func TestMosquittoTakeoverNamedAndBounded(t *testing.T) {
	mq := testbroker.Start(t, testbroker.Options{})
	const rounds = 6
	type side struct {
		s   *Source
		m   *runner.Metrics
		lr  *logRecorder
		er  *errRecorder
		clk *fakeClock
	}
	var sides []side
	for range 2 {
		cfg := *Defaults()
		cfg.Brokers = []string{mq.URL()}
		cfg.ClientID = "t-clone"
		cfg.Subscriptions = []Subscription{{Topic: "clone/#", QoS: 1}}
		sd := side{m: runner.NewMetrics(), lr: &logRecorder{}, er: &errRecorder{}, clk: newFakeClock()}
		dial := func(cfg *Config, id string, tc *tls.Config, h handlers) broker {
			o := clientOptions(cfg, id, tc)
			o.Now, o.Sleep = sd.clk.now, sd.clk.sleep
			return newClient(o, h)
		}
		s, err := newSource(cfg, agent.Env{Pipeline: "p", Component: "mqtt", AgentName: "a", Metrics: sd.m,
			Logger: slog.New(sd.lr), ReportError: sd.er.report}, dial)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = s.Connect(ctx)
		cancel()
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		sd.s = s
		sides = append(sides, sd)
	}
	fought := wait.Until(30*time.Second, func() bool {
		return len(sides[0].clk.recorded()) >= rounds && len(sides[1].clk.recorded()) >= rounds
	})
	for _, sd := range sides {
		_ = sd.s.Close(context.Background())
	}
	if !fought {
		t.Fatalf("got %d and %d reconnects in 30s, want %d each", len(sides[0].clk.recorded()), len(sides[1].clk.recorded()), rounds)
	}
	for i, sd := range sides {
		logs, _ := sd.lr.text()
		warns := strings.Count("\n"+logs, "\nWARN ") // not the ERROR of a subscribe the other's connect cut short
		waits := sd.clk.recorded()
		reconnects := metricValue(t, sd.m, "pspf_mqtt_reconnects_total")
		taken := metricValue(t, sd.m, `pspf_mqtt_connections_lost_total{pipeline="p",component="mqtt",cause="takeover"}`)
		t.Logf("source %d: %d reconnects, %d takeovers, %d WARN lines, waits %v", i, reconnects, taken, warns, waits)
		for j, w := range waits {
			if step := backoffStep(j, Defaults().MaxReconnect); w < step/2 || w > step {
				t.Errorf("source %d: wait %d is %v, want within [%v, %v]: the backoff must grow and never start over (%v)", i, j, w, step/2, step, waits)
			}
		}
		if taken == 0 {
			t.Errorf("source %d counted no takeover, want every session it lost to the other counted", i)
		}
		if !strings.Contains(logs, "taken over by another client") {
			t.Errorf("source %d: the takeover is not named in the log:\n%s", i, logs)
		}
		if !strings.Contains(sd.er.text(), `client_id "t-clone"`) {
			t.Errorf("source %d: reported errors %q, want the takeover with the client_id", i, sd.er.text())
		}
		// One WARN per episode and cause, one summary a minute of the
		// fake clock.
		var elapsed time.Duration
		for _, w := range waits {
			elapsed += w
		}
		causes := lossCauses(sd.m)
		if limit := causes + int(elapsed/time.Minute); warns > limit {
			t.Errorf("source %d logged %d WARN lines over %v of reconnects and %d causes, want at most %d:\n%s", i, warns, elapsed, causes, limit, logs)
		}
	}
}

// lossCauses counts the causes under which connections were lost.
func lossCauses(m *runner.Metrics) int {
	var b strings.Builder
	m.WritePrometheus(&b)
	n := 0
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "pspf_mqtt_connections_lost_total{") && !strings.HasSuffix(l, " 0") {
			n++
		}
	}
	return n
}

// metricValue returns the value of the metric line that starts with name
// (0 if there is none).
func metricValue(t *testing.T, m *runner.Metrics, name string) int {
	t.Helper()
	l := metricLine(m, name)
	if l == "" {
		return 0
	}
	var v int
	if _, err := fmt.Sscanf(l[strings.LastIndexByte(l, ' ')+1:], "%d", &v); err != nil {
		t.Fatalf("metric %q: %v", l, err)
	}
	return v
}
