package mqttc

import (
	"bufio"
	"context"
	"net"
	"slices"
	"testing"
	"time"
)

// paceEvents records the handler calls of a pacing client in order:
// "m:" and the payload for a message, "drained" for Handlers.Drained.
type paceEvents chan string

func (ev paceEvents) handlers() Handlers {
	return Handlers{
		Message: func(m *Message, stop <-chan struct{}) {
			select {
			case ev <- "m:" + string(m.Payload()):
			case <-stop:
			}
		},
		Drained: func() { ev <- "drained" },
	}
}

// next returns the next n events, failing after 10 s.
func (ev paceEvents) next(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	for range n {
		select {
		case e := <-ev:
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
func pacedBroker(t *testing.T) (url string, send chan<- *Publication, written <-chan struct{}) {
	in := make(chan *Publication)
	out := make(chan struct{}, 10)
	url = start5(t, []byte{typeConnack << 4, 3, 0, 0, 0}, func(c net.Conn, r *bufio.Reader) {
		go func() {
			for {
				if _, _, _, _, err := readPacket(r, 1<<20); err != nil {
					return
				}
			}
		}()
		for p := range in {
			if _, err := c.Write(publishPacket(true, p, 1)); err != nil {
				return
			}
			out <- struct{}{}
		}
	})
	t.Cleanup(func() { close(in) })
	return url, in, out
}

// TestReadPaceGathers checks that under MQTT 5 with ReadPace a read that
// found the socket nearly empty is followed by Drained and a pause, so
// that messages sent meanwhile, even apart, are read and handed on
// together; that a PUBACK does not end the pause (it comes once per group
// commit, and would cut every pause short) but a request does; and that
// Disconnect ends a pause at once. The pace is a minute: every pause here
// ends by a request or by Disconnect.
func TestReadPaceGathers(t *testing.T) {
	url, send, written := pacedBroker(t)
	ev := make(paceEvents, 100)
	o := testOptions(url)
	o.ProtocolVersion, o.ReadPace = 5, time.Minute
	c := New(o, ev.handlers())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	// The CONNACK was a small read: the reader pauses.
	if got := ev.next(t, 1); !slices.Equal(got, []string{"drained"}) {
		t.Fatalf("events after connect %q, want [drained]", got)
	}
	send <- &Publication{Topic: "t", Payload: []byte("a")}
	<-written
	// A PUBACK (for an id the broker never sent) goes out but does not
	// end the pause: a is not read before b comes.
	(&Message{s: c.current(), id: 7, qos: 1}).Ack()
	time.Sleep(50 * time.Millisecond) // not a synchronisation: the PUBACK goes out, a and b come apart
	send <- &Publication{Topic: "t", Payload: []byte("b")}
	<-written
	// A request (a QoS 1 PUBLISH) ends the pause.
	if _, err := c.PublishAsync(ctx, &Publication{Topic: "x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if got := ev.next(t, 3); !slices.Equal(got, []string{"m:a", "m:b", "drained"}) {
		t.Fatalf("events %q, want [m:a m:b drained]", got)
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
	fb := startNetBroker(t, func(_ int, c net.Conn, r *bufio.Reader) {
		for {
			typ, _, _, body, err := readPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ == typeSubscribe {
				_, _ = c.Write([]byte{typeSuback << 4, 3, body[0], body[1], 0})
				for _, p := range []string{"a", "b"} {
					_, _ = c.Write(publishPacket(false, &Publication{Topic: "t", Payload: []byte(p)}, 0))
					time.Sleep(50 * time.Millisecond) // not a synchronisation: a and b come apart
				}
			}
		}
	})
	ev := make(paceEvents, 100)
	o := testOptions(fb.url())
	o.ReadPace = time.Minute
	c := New(o, ev.handlers())
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
// one unacked QoS 1 message is enough; once it is acked, reads pause again.
func TestReadPaceStopsAtHalfReceiveMaximum(t *testing.T) {
	url, send, written := pacedBroker(t)
	msgs := make(chan *Message, 10)
	drained := make(chan struct{}, 10)
	o := testOptions(url)
	o.ProtocolVersion, o.ReadPace, o.ReceiveMaximum = 5, time.Minute, 2
	c := New(o, Handlers{
		Message: func(m *Message, _ <-chan struct{}) { msgs <- m },
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
	send <- &Publication{Topic: "t", QoS: 1, Payload: []byte("1")}
	<-written
	if _, err := c.PublishAsync(ctx, &Publication{Topic: "x", QoS: 1}); err != nil { // ends the pause
		t.Fatal(err)
	}
	m := <-msgs
	wait("drained after the QoS 1 message", drained)
	// One message awaits its ack: the reader must not pause, so a QoS 0
	// message comes through although the client sends nothing.
	send <- &Publication{Topic: "t", Payload: []byte("0")}
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
	if got := m.s.unacked.Load(); got != 1 {
		t.Fatalf("unacked %d, want 1", got)
	}
	m.Ack()
	if got := m.s.unacked.Load(); got != 0 {
		t.Fatalf("unacked after the ack %d, want 0", got)
	}
}
