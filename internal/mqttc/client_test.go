package mqttc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/wait"
)

// netBroker is a scripted broker on a loopback socket: it answers each
// CONNECT with a CONNACK and hands the connection to serve.
type netBroker struct {
	l     net.Listener
	conns atomic.Int32
	mu    sync.Mutex
	peers []string // remote addresses in the order accepted
}

func startNetBroker(t *testing.T, serve func(n int, c net.Conn, r *bufio.Reader)) *netBroker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &netBroker{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := int(fb.conns.Add(1))
			fb.mu.Lock()
			fb.peers = append(fb.peers, c.RemoteAddr().String())
			fb.mu.Unlock()
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				typ, _, _, _, err := readPacket(r, 1<<20)
				if err != nil || typ != packets.Connect {
					return
				}
				if _, err := c.Write([]byte{packets.Connack << 4, 2, 0, 0}); err != nil {
					return
				}
				serve(n, c, r)
			}()
		}
	}()
	return fb
}

func (fb *netBroker) url() string { return "tcp://" + fb.l.Addr().String() }

// settled returns how many client connections the broker has accepted,
// counting every connection dialled before the call: it dials a marker
// connection of its own and waits until the broker has accepted it, after
// the ones queued before it.
func (fb *netBroker) settled(t *testing.T) int {
	t.Helper()
	c, err := net.Dial("tcp", fb.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	marker := c.LocalAddr().String()
	var n int
	wait.For(t, 5*time.Second, "the broker to accept the marker connection", func() bool {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		n = slices.Index(fb.peers, marker)
		return n >= 0
	})
	return n
}

// recorder collects the client's handler calls.
type recorder struct {
	msgs      chan *Message
	oversize  atomic.Int32
	connected atomic.Int32
	lost      chan error
}

func newRecorder() *recorder {
	return &recorder{msgs: make(chan *Message, 100), lost: make(chan error, 10)}
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		Message: func(m *Message, stop <-chan struct{}) {
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
func testOptions(url string) Options {
	return Options{Brokers: []string{url}, ClientID: "t", KeepAlive: 30 * time.Second,
		ConnectTimeout: 10 * time.Second, MaxReconnect: 30 * time.Second, MaxPayload: 256 << 10}
}

func testClient(t *testing.T, url string, keepalive time.Duration, r *recorder) *Client {
	t.Helper()
	cfg := testOptions(url)
	cfg.ClientID = "t-client"
	cfg.KeepAlive = keepalive
	cfg.MaxPayload = 1024 // read limit 66 KiB: the test sends one larger message
	cfg.ConnectTimeout = 2 * time.Second
	cfg.MaxReconnect = time.Second
	c := New(cfg, r.handlers())
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
	fb := startNetBroker(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			typ, _, _, _, err := readPacket(r, 1<<20)
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
	testClient(t, fb.url(), keepalive, r)
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
	if got := fb.conns.Load(); got != 2 {
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
	fb := startNetBroker(t, func(n int, c net.Conn, r *bufio.Reader) {
		if n > 1 {
			return
		}
		pub := func(qos byte, id uint16, topic, payload string) {
			var b bytes.Buffer
			p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			p.Qos, p.MessageID, p.TopicName, p.Payload = qos, id, topic, []byte(payload)
			_ = p.Write(&b)
			_, _ = c.Write(b.Bytes())
		}
		pub(1, 5, "big", strings.Repeat("x", 100000)) // over the read limit: skipped
		pub(1, 6, "big", strings.Repeat("x", 1025))   // over max_payload: read, dropped
		pub(0, 0, "a/0", "zero")
		pub(1, 7, "a/1", "one")
		pub(2, 9, "a/2", "two")
		_, _ = c.Write([]byte{packets.Pubrel<<4 | 2, 2, 0, 9})
		for {
			typ, flags, _, body, err := readPacket(r, 1<<20)
			if err != nil {
				return
			}
			got <- append([]byte{typ<<4 | flags}, body...)
			switch typ {
			case packets.Subscribe:
				id := body[:2]
				_, _ = c.Write([]byte{packets.Suback << 4, 4, id[0], id[1], 1, 0x80})
			case packets.Publish:
				_, id, _, _, _, _ := parsePublish(flags, body, false)
				_, _ = c.Write([]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)})
			}
		}
	})
	r := newRecorder()
	c := testClient(t, fb.url(), 30*time.Second, r)
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
		string([]byte{pktPuback, 0, 5}), string([]byte{pktPuback, 0, 6}), string([]byte{pktPuback, 0, 7}), string([]byte{pktPubrec, 0, 9}), string([]byte{pktPubcomp, 0, 9}),
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
	fb := startNetBroker(t, func(n int, c net.Conn, r *bufio.Reader) {
		var b bytes.Buffer
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.Qos, p.MessageID, p.TopicName = 1, 3, "t"
		_ = p.Write(&b)
		_, _ = c.Write(b.Bytes())
		for { // never answers
			typ, _, _, _, err := readPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ == packets.Publish {
				once.Do(func() { close(published) })
			}
		}
	})
	r := newRecorder()
	c := testClient(t, fb.url(), 30*time.Second, r)
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
		if !errors.Is(err, errDisconnected) {
			t.Errorf("publish: %v, want it failed by the disconnect", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish still waits after Disconnect")
	}
	m.Ack()
	if err := c.Publish(context.Background(), "s", 1, false, nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("publish after Disconnect: %v, want ErrNotConnected", err)
	}
	// Disconnect has joined the reconnect loop: a reconnect would have been
	// dialled by now. settled accepts what is queued before counting.
	if n := fb.settled(t); n != 1 {
		t.Errorf("%d connections, want 1 (no reconnect after Disconnect)", n)
	}
	select {
	case err := <-r.lost:
		t.Errorf("lost called after Disconnect: %v", err)
	default:
	}
}

// listenOnce accepts one loopback connection and hands it to serve; it
// returns the broker's URL.
func listenOnce(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	return "tcp://" + l.Addr().String()
}

// TestClientConnectRefused checks that a CONNACK refusal is an error that
// names the reason.
func TestClientConnectRefused(t *testing.T) {
	url := listenOnce(t, func(c net.Conn) {
		if typ, _, _, _, err := readPacket(bufio.NewReader(c), 1<<20); err == nil && typ == packets.Connect {
			_, _ = c.Write([]byte{packets.Connack << 4, 2, 0, packets.ErrRefusedBadUsernameOrPassword})
		}
		_, _ = io.Copy(io.Discard, c)
	})
	c := New(testOptions(url), newRecorder().handlers())
	_, err := c.Connect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "bad user name or password") {
		t.Errorf("connect: %v, want the refusal", err)
	}
	c.Disconnect(0)
}

// TestClientConnectCancelled checks that Connect to a broker that never
// answers returns when its context ends, well before connect_timeout.
func TestClientConnectCancelled(t *testing.T) {
	url := listenOnce(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }) // never sends a CONNACK
	cfg := testOptions(url)
	cfg.ConnectTimeout = time.Minute
	c := New(cfg, newRecorder().handlers())
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
	fb := startNetBroker(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			typ, flags, _, body, err := readPacket(r, 1<<20)
			if err != nil {
				return
			}
			switch typ {
			case packets.Publish:
				_, id, _, _, _, _ := parsePublish(flags, body, false)
				_, _ = c.Write([]byte{packets.Pubrec << 4, 2, byte(id >> 8), byte(id)})
			case packets.Pubrel:
				rels <- append([]byte{typ<<4 | flags}, body...)
				_, _ = c.Write(append([]byte{packets.Pubcomp << 4, 2}, body...))
			}
		}
	})
	c := testClient(t, fb.url(), 30*time.Second, newRecorder())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Publish(ctx, "agents/a/status", 2, true, []byte("online")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case rel := <-rels:
		if want := []byte{pktPubrel, 0, 1}; !bytes.Equal(rel, want) {
			t.Errorf("PUBREL %x, want %x", rel, want)
		}
	default:
		t.Error("Publish returned without a PUBREL sent")
	}
}

// TestReadPacket checks the decoder on good and malformed packets.
func TestReadPacket(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		topic    string
		payload  string
		id       uint16
		err      string
	}{
		{name: "qos0", in: "\x30\x07\x00\x03a/bhi", topic: "a/b", payload: "hi"},
		{name: "qos1", in: "\x32\x09\x00\x03a/b\x01\x02hi", topic: "a/b", id: 0x102, payload: "hi"},
		{name: "qos1 empty payload", in: "\x32\x07\x00\x03a/b\x00\x05", topic: "a/b", id: 5},
		{name: "qos2", in: "\x34\x09\x00\x03a/b\xff\xffhi", topic: "a/b", id: 0xffff, payload: "hi"},
		{name: "qos3", in: "\x36\x05\x00\x03a/b", err: "QoS 3"},
		{name: "short topic", in: "\x30\x03\x00\x05a", err: "topic of 5 bytes"},
		{name: "empty topic", in: "\x30\x04\x00\x00hi", err: "empty topic"},
		{name: "no id", in: "\x32\x05\x00\x03a/b", err: "topic of 3 bytes"},
		{name: "qos1 id 0", in: "\x32\x09\x00\x03a/b\x00\x00hi", err: "PUBLISH QoS 1 with packet id 0"},
		{name: "qos2 id 0", in: "\x34\x07\x00\x03a/b\x00\x00", err: "PUBLISH QoS 2 with packet id 0"},
		{name: "empty", in: "\x30\x00", err: "PUBLISH of 0 bytes"},
		{name: "truncated", in: "\x30\x07\x00\x03a", err: "truncated packet"},
		{name: "truncated length", in: "\x30\x80", err: "truncated packet"},
		{name: "long length", in: "\x30\xff\xff\xff\xff\x01", err: "malformed remaining length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, flags, _, body, err := readPacket(bufio.NewReader(strings.NewReader(tc.in)), 1<<20)
			var topic string
			var id uint16
			var payload []byte
			if err == nil {
				if typ != packets.Publish {
					t.Fatalf("type %d, want PUBLISH", typ)
				}
				topic, id, payload, _, _, err = parsePublish(flags, body, false)
			}
			if tc.err != "" {
				var pe *protocolError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want a protocol violation naming %q", err, tc.err)
				}
				return
			}
			if err != nil || topic != tc.topic || id != tc.id || string(payload) != tc.payload {
				t.Errorf("got %q %d %q %v, want %q %d %q", topic, id, payload, err, tc.topic, tc.id, tc.payload)
			}
		})
	}
}

// TestCheckPacket checks the packets other than PUBLISH that a connected
// client may receive, and the violations it names.
func TestCheckPacket(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		err      string
	}{
		{name: "puback", in: "\x40\x02\x00\x07"},
		{name: "pubrel", in: "\x62\x02\x00\x07"},
		{name: "suback", in: "\x90\x04\x00\x01\x01\x80"},
		{name: "unsuback", in: "\xb0\x02\x00\x01"},
		{name: "pingresp", in: "\xd0\x00"},
		{name: "type 0", in: "\x00\x00", err: "unknown packet type 0"},
		{name: "type 15", in: "\xf0\x00", err: "unknown packet type 15"},
		{name: "connack", in: "\x20\x02\x00\x00", err: "unexpected CONNACK"},
		{name: "subscribe", in: "\x82\x02\x00\x01", err: "unexpected SUBSCRIBE"},
		{name: "puback flags", in: "\x42\x02\x00\x07", err: "PUBACK with flags 0x2"},
		{name: "pubrel flags", in: "\x60\x02\x00\x07", err: "PUBREL with flags 0x0"},
		{name: "puback long", in: "\x40\x03\x00\x07\x00", err: "PUBACK of 3 bytes"},
		{name: "puback short", in: "\x40\x01\x00", err: "PUBACK of 1 bytes"},
		{name: "puback id 0", in: "\x40\x02\x00\x00", err: "PUBACK with packet id 0"},
		{name: "suback no codes", in: "\x90\x02\x00\x01", err: "SUBACK of 2 bytes"},
		{name: "suback code", in: "\x90\x03\x00\x01\x03", err: "return code 0x3"},
		{name: "pingresp body", in: "\xd0\x01\x00", err: "PINGRESP of 1 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, flags, _, body, err := readPacket(bufio.NewReader(strings.NewReader(tc.in)), 1<<20)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			err = checkPacket(typ, flags, body, false)
			var pe *protocolError
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case tc.err != "" && (!errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("err %v, want a protocol violation naming %q", err, tc.err)
			}
		})
	}
}

// FuzzReadPacket feeds the decoder arbitrary bytes: it must not panic; a
// stream ends cleanly only between packets, every other failure is a
// protocolError; a PUBLISH that parses must account for every byte of its
// body and have a topic, a QoS up to 2 and, with QoS 1 or 2, a packet id
// other than 0; any other packet that passes checkPacket has the length
// and packet id MQTT 3.1.1 gives it.
func FuzzReadPacket(f *testing.F) {
	f.Add([]byte("\x30\x07\x00\x03a/bhi\x32\x09\x00\x03a/b\x01\x02hi"))
	f.Add([]byte("\x90\x03\x00\x01\x80\xd0\x00"))
	f.Add([]byte("\x30\xff\xff\xff\x7f"))
	f.Add([]byte("\x32\x07\x00\x03a/b\x00\x00\x36\x05\x00\x03a/b"))
	f.Add([]byte("\x40\x02\x00\x00\x62\x02\x00\x01\xf0\x00"))
	f.Add([]byte("\x32\x50\x00\x00"))
	violation := func(t *testing.T, err error) {
		t.Helper()
		var pe *protocolError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v is not a named protocol violation", err)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			typ, flags, n, body, err := readPacket(r, 64)
			if err == io.EOF {
				return
			}
			if err != nil {
				violation(t, err)
				return
			}
			if typ != packets.Publish {
				if n > 64 {
					return // the client drops the connection
				}
				if err := checkPacket(typ, flags, body, false); err != nil {
					violation(t, err)
					continue
				}
				switch {
				case typ == packets.Pingresp && len(body) != 0,
					typ == packets.Suback && len(body) < 3,
					typ != packets.Pingresp && typ != packets.Suback && len(body) != 2,
					typ != packets.Pingresp && body[0] == 0 && body[1] == 0:
					t.Fatalf("accepted %s with body %x", packetName(typ), body)
				}
				continue
			}
			if n > 64 {
				id, qos, err := skipPublish(r, flags, n)
				if err != nil {
					violation(t, err)
					return
				}
				if qos > 2 || (qos > 0) != (id != 0) {
					t.Fatalf("skipped PUBLISH with qos %d, id %d", qos, id)
				}
				continue
			}
			topic, id, payload, qos, _, err := parsePublish(flags, body, false)
			if err != nil {
				violation(t, err)
				continue
			}
			parsed := 2 + len(topic) + len(payload)
			if qos > 0 {
				parsed += 2
			}
			if parsed != n || n != len(body) || qos > 2 || topic == "" || (qos > 0) != (id != 0) {
				t.Fatalf("PUBLISH of %d bytes parsed as topic %q, payload %d, qos %d, id %d", len(body), topic, len(payload), qos, id)
			}
		}
	})
}

// TestClientPublishAsync checks that PublishAsync sends messages in order,
// that each channel receives nil at its PUBACK, and that those still
// waiting when the connection ends receive ErrConnEnded.
func TestClientPublishAsync(t *testing.T) {
	const n, acked = 50, 40
	got := make(chan []string, 1)
	fb := startNetBroker(t, func(_ int, c net.Conn, r *bufio.Reader) {
		var topics []string
		for len(topics) < n {
			typ, flags, _, body, err := readPacket(r, 1<<20)
			if err != nil || typ != typePublish {
				return
			}
			topic, id, _, _, _, err := parsePublish(flags, body, false)
			if err != nil {
				return
			}
			topics = append(topics, topic)
			if len(topics) <= acked {
				if _, err := c.Write([]byte{typePuback << 4, 2, byte(id >> 8), byte(id)}); err != nil {
					return
				}
			}
		}
		got <- topics
	})
	c := testClient(t, fb.url(), 30*time.Second, newRecorder())
	var acks []<-chan error
	for i := range n {
		ack, err := c.PublishAsync(context.Background(), &Publication{Topic: "t/" + strconv.Itoa(i), QoS: 1, Payload: []byte("x")})
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
			if i < acked && err != nil || i >= acked && !errors.Is(err, ErrConnEnded) {
				t.Errorf("message %d: got %v, want %v", i, err, map[bool]error{true: nil, false: ErrConnEnded}[i < acked])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d: no answer", i)
		}
	}
}
