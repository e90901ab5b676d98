package mqttc_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/internal/wait"
)

// recorder collects the client's handler calls.
type recorder struct {
	msgs      chan *mqttc.Message
	oversize  atomic.Int32
	connected atomic.Int32
	lost      chan error
}

func newRecorder() *recorder {
	return &recorder{msgs: make(chan *mqttc.Message, 100), lost: make(chan error, 10)}
}

func (r *recorder) handlers() mqttc.Handlers {
	return mqttc.Handlers{
		Message: func(m *mqttc.Message, stop <-chan struct{}) {
			select {
			case r.msgs <- m:
			case <-stop:
			}
		},
		Oversize:  func() { r.oversize.Add(1) },
		Connected: func() { r.connected.Add(1) },
		Lost:      func(_ string, err error) { r.lost <- err },
	}
}

// testOptions are the options of a test client of url.
func testOptions(url string) mqttc.Options {
	return mqttc.Options{Brokers: []string{url}, ClientID: "t", KeepAlive: 30 * time.Second,
		ConnectTimeout: 10 * time.Second, MaxReconnect: 30 * time.Second, MaxPayload: 256 << 10}
}

func testClient(t *testing.T, url string, keepalive time.Duration, r *recorder) *mqttc.Client {
	t.Helper()
	cfg := testOptions(url)
	cfg.ClientID = "t-client"
	cfg.KeepAlive = keepalive
	cfg.MaxPayload = 1024 // read limit 66 KiB: the test sends one larger message
	cfg.ConnectTimeout = 2 * time.Second
	cfg.MaxReconnect = time.Second
	c := mqttc.New(cfg, r.handlers())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestClientKeepalive checks that a quiet connection is kept alive with
// PINGREQs while the broker answers them, and is ended and reconnected
// once the broker falls silent.
func TestClientKeepalive(t *testing.T) {
	const keepalive = 200 * time.Millisecond
	var pings atomic.Int32
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			typ, _, _, _, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ != packets.Pingreq {
				continue
			}
			// The first connection answers five pings, then falls silent.
			if pings.Add(1) <= 5 || n > 1 {
				if _, err := c.Write([]byte{packets.Pingresp << 4, 0}); err != nil {
					return
				}
			}
		}
	})
	r := newRecorder()
	testClient(t, fb.URL(), keepalive, r)
	select {
	case err := <-r.lost:
		if p := pings.Load(); p < 6 {
			t.Errorf("connection ended after %d pings, want 5 answered and the 6th not: %v", p, err)
		}
		if !strings.Contains(err.Error(), "after a PINGREQ") {
			t.Errorf("lost: %v, want the keepalive failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the silent connection was not ended (%d pings)", pings.Load())
	}
	wait.Until(10*time.Second, func() bool { return r.connected.Load() >= 2 })
	if got := r.connected.Load(); got != 2 {
		t.Errorf("connected called %d times, want 2 (the reconnect)", got)
	}
	if got := fb.Conns(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

// TestClientReceiveAckAndRequests checks the packets the client sends: a
// PUBACK for a message over max_payload, dropped and counted (one so far
// over that it is skipped unread, one read whole); a PUBACK or
// PUBREC for an acked message (none for QoS 0, none after its
// connection has ended), a PUBCOMP for a PUBREL, a SUBSCRIBE whose refused
// filter fails Subscribe, and a QoS 1 publish that waits for its PUBACK.
func TestClientReceiveAckAndRequests(t *testing.T) {
	got := make(chan []byte, 100)
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		if n > 1 {
			return
		}
		pub := func(qos byte, id uint16, topic, payload string) {
			_, _ = c.Write(mqttc.EncodePublish(false, &mqttc.Publication{Topic: topic, QoS: qos, Payload: []byte(payload)}, id))
		}
		pub(1, 5, "big", strings.Repeat("x", 100000)) // over the read limit: skipped
		pub(1, 6, "big", strings.Repeat("x", 1025))   // over max_payload: read, dropped
		pub(0, 0, "a/0", "zero")
		pub(1, 7, "a/1", "one")
		pub(2, 9, "a/2", "two")
		_, _ = c.Write([]byte{packets.Pubrel<<4 | 2, 2, 0, 9})
		for {
			typ, flags, _, body, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			got <- append([]byte{typ<<4 | flags}, body...)
			switch typ {
			case packets.Subscribe:
				id := body[:2]
				_, _ = c.Write([]byte{packets.Suback << 4, 4, id[0], id[1], 1, 0x80})
			case packets.Publish:
				_, id, _, _, _ := mqttc.ParsePublish(flags, body, false)
				_, _ = c.Write([]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)})
			}
		}
	})
	r := newRecorder()
	c := testClient(t, fb.URL(), 30*time.Second, r)
	for _, want := range []string{"a/0 zero 0", "a/1 one 1", "a/2 two 2"} {
		select {
		case m := <-r.msgs:
			if s := m.Topic() + " " + string(m.Payload()) + " " + string('0'+m.Qos()); s != want {
				t.Fatalf("got message %q, want %q", s, want)
			}
			m.Ack()
		case <-time.After(5 * time.Second):
			t.Fatalf("message %q did not arrive", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Subscribe(ctx, map[string]byte{"x/#": 1, "y/#": 0})
	if err == nil || !strings.Contains(err.Error(), `"y/#"`) || strings.Contains(err.Error(), `"x/#"`) {
		t.Errorf("subscribe: %v, want y/# refused", err)
	}
	if err := c.Publish(ctx, "s", 1, true, []byte("online")); err != nil {
		t.Errorf("publish: %v", err)
	}
	var sent []string
	for len(sent) < 7 {
		select {
		case p := <-got:
			sent = append(sent, string(p[:1])+string(p[1:min(len(p), 3)]))
		case <-time.After(5 * time.Second):
			t.Fatalf("client sent only %q", sent)
		}
	}
	if n := r.oversize.Load(); n != 2 {
		t.Errorf("oversize called %d times, want 2", n)
	}
	want := []string{
		string([]byte{packets.Puback << 4, 0, 5}), string([]byte{packets.Puback << 4, 0, 6}), string([]byte{packets.Puback << 4, 0, 7}), string([]byte{packets.Pubrec << 4, 0, 9}), string([]byte{packets.Pubcomp << 4, 0, 9}),
		string([]byte{packets.Subscribe<<4 | 2, 0, 1}), string([]byte{packets.Publish<<4 | 3, 0, 1}),
	}
	// The PUBCOMP may overtake the acks: it is sent by the reader.
	for _, w := range want {
		found := false
		for _, s := range sent {
			found = found || s == w
		}
		if !found {
			t.Errorf("client sent %q, want among them %q", sent, w)
		}
	}
}

// TestClientDisconnect checks that Disconnect fails a waiting request,
// stops reconnecting, and that Ack after it sends nothing and does not
// block.
func TestClientDisconnect(t *testing.T) {
	published := make(chan struct{})
	var once sync.Once
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		_, _ = c.Write(mqttc.EncodePublish(false, &mqttc.Publication{Topic: "t", QoS: 1}, 3))
		for { // never answers
			typ, _, _, _, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ == packets.Publish {
				once.Do(func() { close(published) })
			}
		}
	})
	r := newRecorder()
	c := testClient(t, fb.URL(), 30*time.Second, r)
	m := <-r.msgs
	errc := make(chan error, 1)
	go func() { errc <- c.Publish(context.Background(), "s", 1, false, nil) }()
	select { // the publish waits for its PUBACK
	case <-published:
	case <-time.After(5 * time.Second):
		t.Fatal("the broker got no PUBLISH")
	}
	c.Disconnect(0)
	select {
	case err := <-errc:
		if !errors.Is(err, mqttc.ErrDisconnected) {
			t.Errorf("publish: %v, want it failed by the disconnect", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish still waits after Disconnect")
	}
	m.Ack()
	if err := c.Publish(context.Background(), "s", 1, false, nil); !errors.Is(err, mqttc.ErrNotConnected) {
		t.Errorf("publish after Disconnect: %v, want mqttc.ErrNotConnected", err)
	}
	// Disconnect has joined the reconnect loop: a reconnect would have been
	// dialled by now. settled accepts what is queued before counting.
	if n := fb.Settled(t); n != 1 {
		t.Errorf("%d connections, want 1 (no reconnect after Disconnect)", n)
	}
	select {
	case err := <-r.lost:
		t.Errorf("lost called after Disconnect: %v", err)
	default:
	}
}

// TestClientConnectRefused checks that a CONNACK refusal is an error that
// names the reason.
func TestClientConnectRefused(t *testing.T) {
	url := mqtttest.Once(t, func(c net.Conn, r *bufio.Reader) {
		if typ, _, _, _, err := mqttc.ReadPacket(r, 1<<20); err == nil && typ == packets.Connect {
			_, _ = c.Write([]byte{packets.Connack << 4, 2, 0, packets.ErrRefusedBadUsernameOrPassword})
		}
		_, _ = io.Copy(io.Discard, c)
	})
	c := mqttc.New(testOptions(url), newRecorder().handlers())
	_, err := c.Connect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "bad user name or password") {
		t.Errorf("connect: %v, want the refusal", err)
	}
	c.Disconnect(0)
}

// TestClientConnectCancelled checks that Connect to a broker that never
// answers returns when its context ends, well before connect_timeout.
func TestClientConnectCancelled(t *testing.T) {
	url := mqtttest.Once(t, func(_ net.Conn, r *bufio.Reader) { _, _ = io.Copy(io.Discard, r) }) // never sends a CONNACK
	cfg := testOptions(url)
	cfg.ConnectTimeout = time.Minute
	c := mqttc.New(cfg, newRecorder().handlers())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := c.Connect(ctx); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("connect: %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not return when its context ended")
	}
	c.Disconnect(0)
}

// TestClientPublishQoS2 checks a QoS 2 publish (a status message may be
// one): the PUBREC is answered with a PUBREL of the same id, and Publish
// returns at the PUBCOMP.
func TestClientPublishQoS2(t *testing.T) {
	rels := make(chan []byte, 1)
	fb := mqtttest.Start(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			typ, flags, _, body, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			switch typ {
			case packets.Publish:
				_, id, _, _, _ := mqttc.ParsePublish(flags, body, false)
				_, _ = c.Write([]byte{packets.Pubrec << 4, 2, byte(id >> 8), byte(id)})
			case packets.Pubrel:
				rels <- append([]byte{typ<<4 | flags}, body...)
				_, _ = c.Write(append([]byte{packets.Pubcomp << 4, 2}, body...))
			}
		}
	})
	c := testClient(t, fb.URL(), 30*time.Second, newRecorder())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Publish(ctx, "agents/a/status", 2, true, []byte("online")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case rel := <-rels:
		if want := []byte{packets.Pubrel<<4 | 2, 0, 1}; !bytes.Equal(rel, want) {
			t.Errorf("PUBREL %x, want %x", rel, want)
		}
	default:
		t.Error("Publish returned without a PUBREL sent")
	}
}

// TestClientPublishAsync checks that PublishAsync sends messages in order,
// that each channel receives nil at its PUBACK, and that those still
// waiting when the connection ends receive mqttc.ErrConnEnded.
func TestClientPublishAsync(t *testing.T) {
	const n, acked = 50, 40
	got := make(chan []string, 1)
	fb := mqtttest.Start(t, func(_ int, c net.Conn, r *bufio.Reader) {
		var topics []string
		for len(topics) < n {
			typ, flags, _, body, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil || typ != packets.Publish {
				return
			}
			topic, id, _, _, err := mqttc.ParsePublish(flags, body, false)
			if err != nil {
				return
			}
			topics = append(topics, topic)
			if len(topics) <= acked {
				if _, err := c.Write([]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)}); err != nil {
					return
				}
			}
		}
		got <- topics
	})
	c := testClient(t, fb.URL(), 30*time.Second, newRecorder())
	var acks []<-chan error
	for i := range n {
		ack, err := c.PublishAsync(context.Background(), &mqttc.Publication{Topic: "t/" + strconv.Itoa(i), QoS: 1, Payload: []byte("x")})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		acks = append(acks, ack)
	}
	var topics []string
	select {
	case topics = <-got: // the broker closes the connection after reading them all
	case <-time.After(10 * time.Second):
		t.Fatal("the broker did not get every message")
	}
	for i, topic := range topics {
		if want := "t/" + strconv.Itoa(i); topic != want {
			t.Fatalf("message %d: got topic %q, want %q", i, topic, want)
		}
	}
	for i, ack := range acks {
		select {
		case err := <-ack:
			if i < acked && err != nil || i >= acked && !errors.Is(err, mqttc.ErrConnEnded) {
				t.Errorf("message %d: got %v, want %v", i, err, map[bool]error{true: nil, false: mqttc.ErrConnEnded}[i < acked])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d: no answer", i)
		}
	}
}
