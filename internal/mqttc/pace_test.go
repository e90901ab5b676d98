package mqttc_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
)

// paceEvents records the handler calls of a pacing client in order:
// "m:" and the payload for a message, "drained" for Handlers.Drained; the
// QoS 1 messages also go to acks, for the test to ack.
type paceEvents struct {
	ev   chan string
	acks chan *mqttc.Message
}

func newPaceEvents() paceEvents {
	return paceEvents{ev: make(chan string, 100), acks: make(chan *mqttc.Message, 100)}
}

func (p paceEvents) handlers() mqttc.Handlers {
	return mqttc.Handlers{
		Message: func(m *mqttc.Message, stop <-chan struct{}) {
			if m.Qos() > 0 {
				p.acks <- m
			}
			select {
			case p.ev <- "m:" + string(m.Payload()):
			case <-stop:
			}
		},
		Drained: func() { p.ev <- "drained" },
	}
}

// next returns the next n events, failing after 10 s.
func (p paceEvents) next(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	for range n {
		select {
		case e := <-p.ev:
			got = append(got, e)
		case <-time.After(10 * time.Second):
			t.Fatalf("events %q, then none for 10s", got)
		}
	}
	return got
}

// pacedBroker starts a scripted MQTT 5 broker that sends the client
// every publication on send, each with its own write, and signals written
// after each; what the client sends it reads and drops.
func pacedBroker(t *testing.T) (url string, send chan<- *mqttc.Publication, written <-chan struct{}) {
	return pacedBrokerOn(t, nil)
}

// pacedBrokerOn is pacedBroker over TLS with the server configuration tc
// (each write one TLS record, as mosquitto sends), or TCP if tc is nil.
// A nil publication on send closes the connection (over TLS with a
// close_notify).
func pacedBrokerOn(t *testing.T, tc *tls.Config) (url string, send chan<- *mqttc.Publication, written <-chan struct{}) {
	in := make(chan *mqttc.Publication)
	out := make(chan struct{}, 10)
	connack := []byte{packets.Connack << 4, 3, 0, 0, 0}
	script := func(_ int, c net.Conn, r *bufio.Reader) {
		go func() {
			for {
				if _, _, _, _, err := mqttc.ReadPacket(r, 1<<20); err != nil {
					return
				}
			}
		}()
		for p := range in {
			if p == nil {
				return
			}
			if _, err := c.Write(mqttc.EncodePublish(true, p, 1)); err != nil {
				return
			}
			out <- struct{}{}
		}
	}
	if tc == nil {
		url = mqtttest.StartV5(t, connack, script).URL()
	} else {
		url = mqtttest.StartV5TLS(t, tc, connack, script).URL()
	}
	t.Cleanup(func() { close(in) })
	return url, in, out
}

// testTLS returns a server TLS configuration with a certificate for
// 127.0.0.1 and a client configuration that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	hs := httptest.NewUnstartedServer(nil)
	hs.StartTLS() // for its certificate, valid for 127.0.0.1
	t.Cleanup(hs.Close)
	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate())
	return hs.TLS, &tls.Config{RootCAs: roots}
}

// TestReadPaceGathersTLS checks that reads over TLS pause as over TCP,
// although the broker sends each message in its own TLS record: the
// CONNACK is followed by Drained (a pause), five messages sent one by one
// during the pause are handed on together before the next Drained (not
// one message per pause), and a connection the broker closes during a
// pause (with a close_notify) is seen as closed by the broker when the
// pause ends.
func TestReadPaceGathersTLS(t *testing.T) {
	stc, ctc := testTLS(t)
	url, send, written := pacedBrokerOn(t, stc)
	ev := newPaceEvents()
	lost := make(chan string, 10)
	h := ev.handlers()
	h.Lost = func(cause string, _ error) { lost <- cause }
	o := testOptions(url)
	o.ProtocolVersion, o.ReadPace, o.TLS = 5, time.Minute, ctc
	c := mqttc.New(o, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Disconnect(0)
	if got := ev.next(t, 1); !slices.Equal(got, []string{"drained"}) {
		t.Fatalf("events after connect %q, want [drained] (reads over TLS not paced)", got)
	}
	request := func() { // a QoS 1 PUBLISH, whose PUBACK never comes: ends the pause
		t.Helper()
		if _, err := c.PublishAsync(ctx, &mqttc.Publication{Topic: "x", QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 5 {
		p := strconv.Itoa(i)
		send <- &mqttc.Publication{Topic: "t", Payload: []byte(p)}
		<-written
		want = append(want, "m:"+p)
	}
	request()
	want = append(want, "drained")
	if got := ev.next(t, len(want)); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q: all five messages of the pause in one burst", got, want)
	}
	// The reader pauses a minute; the broker closes the connection. A
	// request ends the pause, and the next read finds the end.
	send <- nil
	request()
	select {
	case cause := <-lost:
		// The broker accepts the reconnect at once: a takeover by its
		// rule (see mqttc's takeover), else closed_by_broker.
		if cause != "takeover" && cause != "closed_by_broker" {
			t.Errorf("connection lost with cause %q, want a close by the broker", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection's end was not seen after the pause")
	}
}

// TestReadPaceGathers checks that under MQTT 5 with ReadPace a read that
// found the socket nearly empty is followed by Drained and a pause, so
// that messages sent meanwhile, even apart, are read and handed on
// together; that a PUBACK does not end the pause (it comes once per group
// commit, and would cut every pause short) but a request does; and that
// Disconnect ends a pause at once. The pace is a minute: every pause here
// ends by a request or by Disconnect. The same holds with an adaptive
// pace (ReadPaceBatch) capped at a minute: the cap is the pace until the
// rate is known, and one message cannot bring it down to 50 ms.
func TestReadPaceGathers(t *testing.T) {
	for _, batch := range []int{0, 500} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) { testReadPaceGathers(t, batch) })
	}
}

func testReadPaceGathers(t *testing.T, batch int) {
	url, send, written := pacedBroker(t)
	ev := newPaceEvents()
	o := testOptions(url)
	o.ProtocolVersion, o.ReadPace = 5, time.Minute
	o.ReadPaceBatch, o.ReadPaceMin = batch, 5*time.Millisecond
	c := mqttc.New(o, ev.handlers())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	// The CONNACK was a small read: the reader pauses.
	if got := ev.next(t, 1); !slices.Equal(got, []string{"drained"}) {
		t.Fatalf("events after connect %q, want [drained]", got)
	}
	request := func() { // a QoS 1 PUBLISH, whose PUBACK never comes
		t.Helper()
		if _, err := c.PublishAsync(ctx, &mqttc.Publication{Topic: "x", QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	send <- &mqttc.Publication{Topic: "t", QoS: 1, Payload: []byte("q")}
	<-written
	request()
	if got := ev.next(t, 2); !slices.Equal(got, []string{"m:q", "drained"}) {
		t.Fatalf("events %q, want [m:q drained]", got)
	}
	// The reader pauses again. b and c, apart, with q's PUBACK sent
	// between them, wait in the socket and are read together.
	send <- &mqttc.Publication{Topic: "t", Payload: []byte("b")}
	<-written
	(<-ev.acks).Ack()
	time.Sleep(50 * time.Millisecond) // not a synchronisation: the PUBACK goes out, b and c come apart
	send <- &mqttc.Publication{Topic: "t", Payload: []byte("c")}
	<-written
	request()
	if got := ev.next(t, 3); !slices.Equal(got, []string{"m:b", "m:c", "drained"}) {
		t.Fatalf("events %q, want [m:b m:c drained]", got)
	}
	done := make(chan struct{})
	go func() {
		c.Disconnect(0)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Disconnect did not end the reader's pause (ReadPace is a minute)")
	}
}

// TestReadPaceNotUnder311 checks that ReadPace does nothing under MQTT
// 3.1.1, where the broker's own in-flight limit is unknown: a message is
// handed on as soon as it comes, with no Drained, although the client
// sends nothing.
func TestReadPaceNotUnder311(t *testing.T) {
	fb := mqtttest.Start(t, func(_ int, c net.Conn, r *bufio.Reader) {
		for {
			typ, _, _, body, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ == packets.Subscribe {
				_, _ = c.Write([]byte{packets.Suback << 4, 3, body[0], body[1], 0})
				for _, p := range []string{"a", "b"} {
					_, _ = c.Write(mqttc.EncodePublish(false, &mqttc.Publication{Topic: "t", Payload: []byte(p)}, 0))
					time.Sleep(50 * time.Millisecond) // not a synchronisation: a and b come apart
				}
			}
		}
	})
	ev := newPaceEvents()
	o := testOptions(fb.URL())
	o.ReadPace = time.Minute
	c := mqttc.New(o, ev.handlers())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Disconnect(0)
	if err := c.Subscribe(ctx, map[string]byte{"t": 0}); err != nil {
		t.Fatal(err)
	}
	if got := ev.next(t, 2); !slices.Equal(got, []string{"m:a", "m:b"}) {
		t.Fatalf("events %q, want [m:a m:b]", got)
	}
}

// TestReadPaceStopsAtHalfReceiveMaximum checks that reads do not pause
// while half of Receive Maximum messages await our ack: the broker may be
// waiting for those acks before it sends more. With Receive Maximum 2,
// one unacked QoS 1 message is enough.
func TestReadPaceStopsAtHalfReceiveMaximum(t *testing.T) {
	url, send, written := pacedBroker(t)
	msgs := make(chan *mqttc.Message, 10)
	drained := make(chan struct{}, 10)
	o := testOptions(url)
	o.ProtocolVersion, o.ReadPace, o.ReceiveMaximum = 5, time.Minute, 2
	c := mqttc.New(o, mqttc.Handlers{
		Message: func(m *mqttc.Message, _ <-chan struct{}) { msgs <- m },
		Drained: func() { drained <- struct{}{} },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Disconnect(0)
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s within 10s", what)
		}
	}
	wait("drained after the CONNACK", drained)
	send <- &mqttc.Publication{Topic: "t", QoS: 1, Payload: []byte("1")}
	<-written
	if _, err := c.PublishAsync(ctx, &mqttc.Publication{Topic: "x", QoS: 1}); err != nil { // ends the pause
		t.Fatal(err)
	}
	<-msgs // not acked
	wait("drained after the QoS 1 message", drained)
	// One message awaits its ack: the reader must not pause, so a QoS 0
	// message comes through although the client sends nothing.
	send <- &mqttc.Publication{Topic: "t", Payload: []byte("0")}
	<-written
	select {
	case m0 := <-msgs:
		if m0.Qos() != 0 {
			t.Fatalf("got a QoS %d message, want the QoS 0 one", m0.Qos())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader paused with half of Receive Maximum unacked")
	}
	wait("drained after the QoS 0 message", drained)
}
