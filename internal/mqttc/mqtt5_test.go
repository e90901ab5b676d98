package mqttc_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
)

// client5 is a client of url connected under MQTT 5.
func client5(t *testing.T, url string, h mqttc.Handlers) *mqttc.Client {
	t.Helper()
	o := testOptions(url)
	o.ProtocolVersion = 5
	c := mqttc.New(o, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestV5ReasonCodes checks that MQTT 5 reason codes of failure reach the
// caller named, with the broker's reason string: a SUBACK that refuses
// one filter of two, and a PUBACK that refuses a message.
func TestV5ReasonCodes(t *testing.T) {
	url := mqtttest.StartV5(t, []byte{packets.Connack << 4, 3, 0, 0, 0}, func(_ int, c net.Conn, r *bufio.Reader) {
		for {
			typ, flags, _, body, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			switch typ {
			case packets.Subscribe: // id, properties 0x1F "acl", codes 1 and 0x87
				_, _ = c.Write([]byte{packets.Suback << 4, 11, body[0], body[1], 6, 0x1F, 0, 3, 'a', 'c', 'l', 1, 0x87})
			case packets.Publish:
				_, id, _, _, _ := mqttc.ParsePublish(flags, body, true)
				_, _ = c.Write([]byte{packets.Puback << 4, 3, byte(id >> 8), byte(id), 0x97}) // quota exceeded
			}
		}
	}).URL()
	c := client5(t, url, mqttc.Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Subscribe(ctx, map[string]byte{"a/#": 1, "b/#": 1})
	var re *mqttc.ReasonError
	if !errors.As(err, &re) || re.Code != 0x87 || re.Filter != "b/#" || !strings.Contains(err.Error(), `broker refused subscription "b/#": reason code 0x87 (not authorized): acl`) {
		t.Errorf("subscribe: got %v, want b/# refused with 0x87 and the reason string", err)
	}
	err = c.Publish(ctx, "t", 1, false, []byte("x"))
	if !errors.As(err, &re) || re.Code != 0x97 || re.Packet != "PUBACK" || !strings.Contains(err.Error(), "quota exceeded") {
		t.Errorf("publish: got %v, want PUBACK reason code 0x97", err)
	}
}

// TestV5ReceiveMaximumBoundsPublishes checks that the client never has
// more QoS 1 publishes awaiting their PUBACK than the broker's Receive
// Maximum (2 here): the broker would disconnect it (§4.9).
func TestV5ReceiveMaximumBoundsPublishes(t *testing.T) {
	var unacked, most atomic.Int32
	ids := make(chan uint16, 100)
	url := mqtttest.StartV5(t, []byte{packets.Connack << 4, 6, 0, 0, 3, mqttc.PropReceiveMaximum, 0, 2}, func(_ int, c net.Conn, r *bufio.Reader) {
		go func() { // acks late, one at a time
			for id := range ids {
				time.Sleep(time.Millisecond) // a slow broker (the fault), not a wait: the client may try to send more meanwhile
				unacked.Add(-1)
				if _, err := c.Write([]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)}); err != nil {
					return
				}
			}
		}()
		for {
			typ, flags, _, body, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ == packets.Publish {
				_, id, _, _, _ := mqttc.ParsePublish(flags, body, true)
				n := unacked.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				ids <- id
			}
		}
	}).URL()
	c := client5(t, url, mqttc.Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var acks []<-chan error
	for range 20 {
		ack, err := c.PublishAsync(ctx, &mqttc.Publication{Topic: "t", QoS: 1, Payload: []byte("x")})
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		acks = append(acks, ack)
	}
	for i, ack := range acks {
		if err := <-ack; err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if m := most.Load(); m > 2 {
		t.Errorf("the broker saw %d publishes unacked at once, want at most its Receive Maximum 2", m)
	}
}

// TestV5DisconnectNamesTakeover checks that a broker's MQTT 5 DISCONNECT
// ends the connection with its reason code and string, and that 0x8E
// (session taken over) counts as a takeover at once, without the 3.1.1
// guess from the next connect. (mosquitto 2.0.11 closes the connection
// without a DISCONNECT on a takeover, as under 3.1.1: the guess covers it.)
func TestV5DisconnectNamesTakeover(t *testing.T) {
	var conns atomic.Int32
	url := mqtttest.StartV5(t, []byte{packets.Connack << 4, 3, 0, 0, 0}, func(_ int, c net.Conn, r *bufio.Reader) {
		if conns.Add(1) == 1 { // reason code 0x8E, reason string "by t2"
			_, _ = c.Write([]byte{packets.Disconnect << 4, 10, 0x8E, 8, 0x1F, 0, 5, 'b', 'y', ' ', 't', '2'})
		}
		for {
			if _, _, _, _, err := mqttc.ReadPacket(r, 1<<20); err != nil {
				return
			}
		}
	}).URL()
	lost := make(chan error, 10)
	causes := make(chan string, 10)
	client5(t, url, mqttc.Handlers{Lost: func(cause string, err error) { causes <- cause; lost <- err }})
	select {
	case cause := <-causes:
		err := <-lost
		var re *mqttc.ReasonError
		if cause != mqttc.CauseTakeover || !errors.As(err, &re) || re.Code != 0x8E || !strings.Contains(err.Error(), "DISCONNECT reason code 0x8e (session taken over): by t2") {
			t.Errorf("got cause %q, error %v; want takeover with DISCONNECT reason code 0x8E", cause, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not lost")
	}
}

// TestV5MaximumPacketSize checks that a message over the broker's Maximum
// Packet Size (CONNACK) fails at once, named, instead of making the broker
// close the connection; one within it goes, and publishLen is exact.
func TestV5MaximumPacketSize(t *testing.T) {
	got := make(chan int, 10)
	url := mqtttest.StartV5(t, []byte{packets.Connack << 4, 8, 0, 0, 5, mqttc.PropMaximumPacketSize, 0, 0, 0, 64}, func(_ int, c net.Conn, r *bufio.Reader) {
		for {
			typ, _, n, _, err := mqttc.ReadPacket(r, 1<<20)
			if err != nil {
				return
			}
			if typ == packets.Publish {
				got <- n
			}
		}
	}).URL()
	c := client5(t, url, mqttc.Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	small := &mqttc.Publication{Topic: "t", Payload: make([]byte, 40), User: []mqttc.UserProperty{{Key: "k", Value: "v"}}}
	if _, err := c.PublishAsync(ctx, small); err != nil {
		t.Fatalf("a message within the limit: %v", err)
	}
	select {
	case n := <-got:
		if want := mqttc.PublishLen(true, small) - 2; n != want { // the body: less the one-byte type and length
			t.Errorf("broker got a body of %d bytes, want %d", n, want)
		}
	case <-ctx.Done():
		t.Fatal("the message within the limit did not arrive")
	}
	_, err := c.PublishAsync(ctx, &mqttc.Publication{Topic: "t", Payload: make([]byte, 60)})
	var tl *mqttc.TooLargeError
	if !errors.As(err, &tl) || tl.Max != 64 || !strings.Contains(err.Error(), "over the broker's Maximum Packet Size 64") {
		t.Errorf("a message over the limit: got %v, want a *TooLargeError naming the limit", err)
	}
}
