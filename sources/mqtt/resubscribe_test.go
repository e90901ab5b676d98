package mqtt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/internal/wait"
)

// statusRecorder keeps what the source reports through Env.ReportError,
// a recovery (nil) as "nil".
type statusRecorder struct {
	mu   sync.Mutex
	errs []string
}

func (r *statusRecorder) report(err error) {
	s := "nil"
	if err != nil {
		s = err.Error()
	}
	r.mu.Lock()
	r.errs = append(r.errs, s)
	r.mu.Unlock()
}

func (r *statusRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// resubSource is a source on the real client subscribed to s/#, whose
// reconnects wait no backoff (clk) and whose SUBACK timeout is 300 ms.
func resubSource(t *testing.T, url, version string, lr *logRecorder, sr *statusRecorder, opts ...func(*Config)) (*Source, *runner.Metrics) {
	t.Helper()
	clk := newFakeClock()
	cfg := *Defaults()
	cfg.Brokers = []string{url}
	cfg.ClientID = "t-resub"
	cfg.ProtocolVersion = version
	cfg.Subscriptions = []Subscription{{Topic: "s/#", QoS: 1}}
	cfg.Linger = 0
	for _, o := range opts {
		o(&cfg)
	}
	return clockSource(t, cfg, clk, lr, sr.report, 300*time.Millisecond)
}

// readOne reads one batch within 20 s and acks it; it returns its payloads.
func readOne(t *testing.T, s *Source, lr *logRecorder) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, ack, err := s.Read(ctx)
	if err != nil {
		logs, _ := lr.text()
		t.Fatalf("read: %v (the subscription was never granted?); log:\n%s", err, logs)
	}
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Raw))
	}
	ack(ctx, nil) // the records are the source's again
	return strings.Join(out, ",")
}

// ignoreSubscribe reads the client's packets up to its next SUBSCRIBE and
// answers nothing; it reports false if the connection ended first.
func ignoreSubscribe(_ net.Conn, r *bufio.Reader) bool {
	for {
		typ, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
		if err != nil {
			return false
		}
		if typ == packets.Subscribe {
			return true
		}
	}
}

// subscribeV5 answers the client's next SUBSCRIBE (MQTT 5, one filter)
// with a SUBACK of reason code code; false if the connection ended first.
func subscribeV5(c net.Conn, r *bufio.Reader, code byte) bool {
	for {
		typ, _, _, body, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
		if err != nil {
			return false
		}
		if typ == packets.Subscribe && len(body) >= 2 {
			_, err := c.Write([]byte{packets.Suback << 4, 4, body[0], body[1], 0, code})
			return err == nil
		}
	}
}

// subscribeWarns returns the WARN or worse lines about the subscription or
// the birth message (the client's own WARNs about the dropped connection
// aside).
func subscribeWarns(lr *logRecorder) []string {
	logs, _ := lr.text()
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if (strings.HasPrefix(l, "WARN") || strings.HasPrefix(l, "ERROR")) && (strings.Contains(l, "subscri") || strings.Contains(l, "setting up")) {
			out = append(out, l)
		}
	}
	return out
}

// A SUBSCRIBE after a reconnect that the broker refuses (an ACL not yet
// granting the topic) or leaves unanswered is tried again with a backoff
// on the same connection: once granted, the messages flow without waiting
// for the connection to drop. One WARN for the episode, the failures
// counted and reported for the status, and the recovery reported too. A
// connection that ends meanwhile stops the retries; the next connection
// subscribes at once. mosquitto 2.0.11 grants a subscription its ACL
// denies, so the broker is scripted.
func TestSubscribeRetriedAfterReconnect(t *testing.T) {
	refuse := func(c net.Conn, r *bufio.Reader) bool { _, ok := mqtttest.Subscribe(c, r, 0x80); return ok }
	for _, tc := range []struct {
		name     string
		failures int  // SUBSCRIBEs failed on the second connection
		drop     bool // the broker then drops the second connection too
		fail     func(c net.Conn, r *bufio.Reader) bool
		warn     string
	}{
		{name: "refused", failures: 1, fail: refuse, warn: `broker refused subscription \"s/#\"`},
		{name: "refused twice", failures: 2, fail: refuse, warn: `broker refused subscription \"s/#\"`},
		{name: "unanswered", failures: 1, fail: ignoreSubscribe, warn: "no SUBACK within 300ms"},
		{name: "refused then dropped", failures: 1, drop: true, fail: refuse, warn: `broker refused subscription \"s/#\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			granted := 3 // the connection on which the subscription is granted
			if !tc.drop {
				granted = 2
			}
			b := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
				switch {
				case n == 1:
					mqtttest.Subscribe(c, r, 1) // then the broker drops the connection
					return
				case n == 2:
					for range tc.failures {
						if !tc.fail(c, r) {
							return
						}
					}
					if tc.drop {
						return
					}
				case n > granted:
					_, _ = io.Copy(io.Discard, r) // served nothing
					return
				}
				if _, ok := mqtttest.Subscribe(c, r, 1); !ok {
					return
				}
				p := &mqttc.Publication{Topic: "s/x", QoS: 1, Payload: []byte("after")}
				if _, err := c.Write(mqttc.EncodePublish(false, p, 1)); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, r) // the PUBACK
			})
			lr, sr := &logRecorder{}, &statusRecorder{}
			s, m := resubSource(t, b.URL(), "", lr, sr)
			if got := readOne(t, s, lr); got != "after" {
				t.Fatalf("read %q, want \"after\", the message published once subscribed", got)
			}
			if n := b.Settled(t); n != granted {
				t.Errorf("got %d connections, want %d (the SUBSCRIBE retried on the same one)", n, granted)
			}
			// The episode ends on the setup goroutine once the SUBACK is in
			// and the birth message sent; the message the broker published
			// right after its SUBACK may be read before that.
			wait.Until(10*time.Second, func() bool {
				errs := sr.all()
				return len(errs) > 0 && errs[len(errs)-1] == "nil"
			})
			logs, _ := lr.text()
			if w := subscribeWarns(lr); len(w) != 1 || !strings.Contains(w[0], tc.warn) {
				t.Errorf("got WARN lines about the subscription %q, want 1 naming %q; log:\n%s", w, tc.warn, logs)
			}
			if !strings.Contains(logs, "INFO mqtt source: subscribed again") {
				t.Errorf("the end of the episode is not logged:\n%s", logs)
			}
			want := "pspf_mqtt_subscribe_failures_total{pipeline=\"p\",component=\"mqtt\"} " + string(rune('0'+tc.failures))
			if got := metricLine(m, "pspf_mqtt_subscribe_failures_total"); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			errs := sr.all()
			failed := 0
			for _, e := range errs {
				if strings.Contains(e, "subscribe") {
					failed++
				}
			}
			if failed != tc.failures || len(errs) == 0 || errs[len(errs)-1] != "nil" {
				t.Errorf("reported %q, want %d subscribe failures and a recovery last", errs, tc.failures)
			}
		})
	}
}

// The same on a resumed session (the broker kept it: the source subscribes
// in the background, not in Connect), under MQTT 5: a SUBACK reason code
// from 0x80 is retried on the same connection, and so is a birth message
// the broker refuses (PUBACK reason code from 0x80), alone: the
// subscription it already granted is not asked for again.
func TestSubscribeRetriedOnResumedSession(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status bool // a status topic: the birth message is published
		fail   func(c net.Conn, r *bufio.Reader) bool
		metric string // the failure's counter
	}{
		{name: "subscribe refused", metric: "pspf_mqtt_subscribe_failures_total", fail: func(c net.Conn, r *bufio.Reader) bool {
			return subscribeV5(c, r, 0x87) && subscribeV5(c, r, 1)
		}},
		{name: "birth message refused", status: true, metric: "pspf_mqtt_birth_failures_total", fail: func(c net.Conn, r *bufio.Reader) bool {
			return subscribeV5(c, r, 1) && pubackV5(c, r, 0x87) && pubackV5(c, r, 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var subscribes atomic.Int32
			connack := []byte{packets.Connack << 4, 3, 1, 0, 0} // session present, success, no properties
			b := mqtttest.StartV5(t, connack, func(n int, c net.Conn, r *bufio.Reader) {
				if n > 1 || !tc.fail(c, r) {
					_, _ = io.Copy(io.Discard, r)
					return
				}
				p := &mqttc.Publication{Topic: "s/x", QoS: 1, Payload: []byte("after")}
				if _, err := c.Write(mqttc.EncodePublish(true, p, 1)); err != nil {
					return
				}
				for { // the PUBACK; a SUBSCRIBE now would be one too many
					typ, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
					if err != nil {
						return
					}
					if typ == packets.Subscribe {
						subscribes.Add(1)
					}
				}
			})
			lr, sr := &logRecorder{}, &statusRecorder{}
			s, m := resubSource(t, b.URL(), "5", lr, sr, func(c *Config) {
				if tc.status {
					c.Status.Topic = "st/{agent}"
				}
			})
			if got := readOne(t, s, lr); got != "after" {
				t.Fatalf("read %q, want \"after\", the message published once set up", got)
			}
			if n := b.Settled(t); n != 1 {
				t.Errorf("got %d connections, want 1", n)
			}
			logs, _ := lr.text()
			if w := subscribeWarns(lr); len(w) != 1 || !strings.Contains(w[0], "reason code 0x87") {
				t.Errorf("got WARN lines about the setup %q, want 1 naming reason code 0x87; log:\n%s", w, logs)
			}
			if got := metricLine(m, tc.metric); !strings.HasSuffix(got, " 1") {
				t.Errorf("got %q, want 1 failure", got)
			}
			if errs := sr.all(); len(errs) != 2 || !strings.Contains(errs[0], "0x87") || errs[1] != "nil" {
				t.Errorf("reported %q, want the refusal, then the recovery", errs)
			}
			_ = s.Close(context.Background())
			if n := subscribes.Load(); n != 0 {
				t.Errorf("got %d SUBSCRIBEs after the setup, want none", n)
			}
		})
	}
}

// pubackV5 answers the client's next QoS 1 PUBLISH (MQTT 5) with a PUBACK
// of reason code code; false if the connection ended first.
func pubackV5(c net.Conn, r *bufio.Reader, code byte) bool {
	for {
		typ, flags, _, body, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
		if err != nil {
			return false
		}
		if typ != packets.Publish {
			continue
		}
		_, id, _, _, err := mqttc.ParsePublish(flags, body, true)
		if err != nil {
			return false
		}
		_, err = c.Write([]byte{packets.Puback << 4, 3, byte(id >> 8), byte(id), code})
		return err == nil
	}
}

// A SUBACK queued behind messages that wait for room in flight (the
// client reads nothing meanwhile: a resumed backlog, a pipeline that
// stalls) is waited for as long as that lasts: the SUBSCRIBE is not taken
// for unanswered, sent again, or warned about.
func TestSubackBehindBacklogIsWaitedFor(t *testing.T) {
	const maxInFlight, backlog = 4, 10
	var subscribes atomic.Int32
	b := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		if n == 1 {
			mqtttest.Subscribe(c, r, 1) // then the broker drops the connection
			return
		}
		if n > 2 {
			_, _ = io.Copy(io.Discard, r)
			return
		}
		for i := range backlog {
			p := &mqttc.Publication{Topic: "s/x", QoS: 1, Payload: []byte{'a' + byte(i)}}
			if _, err := c.Write(mqttc.EncodePublish(false, p, uint16(i+1))); err != nil {
				return
			}
		}
		for {
			if _, ok := mqtttest.Subscribe(c, r, 1); !ok {
				return
			}
			subscribes.Add(1)
		}
	})
	lr, sr := &logRecorder{}, &statusRecorder{}
	s, m := resubSource(t, b.URL(), "", lr, sr, func(c *Config) { c.MaxInFlight = maxInFlight })
	wait.For(t, 10*time.Second, "the client held by the in-flight bound", func() bool {
		_, blocked := s.queue.stalled()
		return blocked
	})
	// Nothing is read for three SUBACK timeouts: the broker answered, the
	// SUBACK waits behind the backlog.
	time.Sleep(3 * s.subTimeout)
	var got strings.Builder
	for got.Len() < backlog {
		got.WriteString(strings.ReplaceAll(readOne(t, s, lr), ",", ""))
	}
	if want := "abcdefghij"; got.String() != want {
		t.Errorf("read %q, want %q", got.String(), want)
	}
	wait.For(t, 10*time.Second, "the SUBSCRIBE answered", func() bool { return subscribes.Load() >= 1 })
	logs, _ := lr.text()
	if n := subscribes.Load(); n != 1 {
		t.Errorf("got %d SUBSCRIBEs, want 1; log:\n%s", n, logs)
	}
	if w := subscribeWarns(lr); len(w) != 0 {
		t.Errorf("got WARN lines about the subscription %q, want none; log:\n%s", w, logs)
	}
	if got := metricLine(m, "pspf_mqtt_subscribe_failures_total"); !strings.HasSuffix(got, " 0") {
		t.Errorf("got %q, want no failure", got)
	}
}

// setSubErr makes the fake's SUBSCRIBEs fail with err (nil: granted) and
// returns how many it was asked for so far.
func (f *fakeBroker) setSubErr(err error) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subErr = err
	return f.nsubs
}

// A SUBSCRIBE refused on every attempt for a minute is retried with a
// backoff whose ceiling doubles from 1 s up to max_reconnect_interval, on
// one WARN; a nack's reconnect then disconnects the client at once (its
// retry loop ends first, not after its wait) and the new connection's
// setup ends the episode. It runs in a synctest bubble: the backoff's
// waits take no time.
func TestFakeSubscribeRetryBacksOffAndEndsWithItsClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Linger = 0
		cfg.MaxReconnect = 8 * time.Second
		d := &fakeDialer{}
		lr, sr := &logRecorder{}, &statusRecorder{}
		m := runner.NewMetrics()
		s, err := newSource(cfg, agent.Env{Pipeline: "p", Component: "mqtt", Metrics: m, AgentName: "a",
			Logger: slog.New(lr), ReportError: sr.report}, d.dial)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		first := d.last()
		first.setSubErr(errors.New("mqtt: broker refused subscription \"sensors/#\""))
		start := time.Now()
		first.h.connected() // a reconnect: its SUBSCRIBE is refused from now on
		time.Sleep(time.Minute)
		synctest.Wait()
		asked := first.setSubErr(errors.New("mqtt: broker refused subscription \"sensors/#\""))
		// The ceilings 1, 2, 4, 8, 8, ... s: at least 1+ (60-7)/8 = 7
		// retries in a minute (each wait is at most its ceiling); fewer
		// than 60 (not one a second).
		t.Logf("%d retries of the SUBSCRIBE in a minute", asked-2)
		if retries := asked - 2; retries < 7 || retries >= 60 {
			t.Errorf("got %d retries of the SUBSCRIBE in %v, want 7 to 59", retries, time.Since(start))
		}
		if got := metricLine(m, "pspf_mqtt_subscribe_failures_total"); got != fmt.Sprintf(`pspf_mqtt_subscribe_failures_total{pipeline="p",component="mqtt"} %d`, asked-1) {
			t.Errorf("got %q, want %d failures", got, asked-1)
		}
		if logs, warns := lr.text(); warns != 1 {
			t.Errorf("got %d WARN lines, want 1 for the episode:\n%s", warns, logs)
		}

		// A nack: the next Read reconnects, with the loop waiting.
		first.h.message(&fakeMsg{topic: "sensors/x", payload: []byte("v"), qos: 1}, nil)
		_, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ack(ctx, errors.New("disk full"))
		go func() {
			synctest.Wait() // Read has reconnected and waits for a message
			d.last().h.message(&fakeMsg{topic: "sensors/x", payload: []byte("w"), qos: 1}, nil)
		}()
		before := time.Now()
		_, ack, err = s.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ack(ctx, nil)
		if el := time.Since(before); el != 0 {
			t.Errorf("the reconnect took %v, want no wait for the old client's retry loop", el)
		}
		if d.last() == first {
			t.Fatal("no new connection after the nack")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := first.setSubErr(nil); n != asked {
			t.Errorf("the old client was asked %d SUBSCRIBEs, %d after its disconnect; want none", n, n-asked)
		}
		logs, _ := lr.text()
		if !strings.Contains(logs, "INFO mqtt source: subscribed again") {
			t.Errorf("the new connection's setup did not end the episode:\n%s", logs)
		}
		if errs := sr.all(); len(errs) == 0 || errs[len(errs)-1] != "nil" {
			t.Errorf("reported %q, want the recovery last", errs)
		}
		_ = s.Close(ctx)
	})
}
