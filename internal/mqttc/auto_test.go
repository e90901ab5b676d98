package mqttc_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/internal/testkit"
)

// publish0 writes a QoS 0 PUBLISH of payload on topic "t" (MQTT 3.1.1).
func publish0(c net.Conn, payload string) error {
	b := []byte{packets.Publish << 4, byte(3 + len(payload)), 0, 1, 't'}
	_, err := c.Write(append(b, payload...))
	return err
}

// autoClient is a client of url under protocol_version auto; msgs gets
// the payload of every message it receives.
func autoClient(t *testing.T, url string, log *testkit.LogBuffer, msgs chan<- string) *mqttc.Client {
	t.Helper()
	o := testOptions(url)
	o.ProtocolVersion = mqttc.ProtocolAuto
	o.ConnectTimeout = 2 * time.Second
	o.MaxReconnect = 50 * time.Millisecond
	c := mqttc.New(o, mqttc.Handlers{Log: log.Logger(slog.LevelInfo), Message: func(m *mqttc.Message, _ <-chan struct{}) {
		if msgs != nil {
			msgs <- string(m.Payload())
		}
		m.Ack()
	}})
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func connect(c *mqttc.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Connect(ctx)
	return err
}

func recv(t *testing.T, msgs <-chan string, want string) {
	t.Helper()
	select {
	case got := <-msgs:
		if got != want {
			t.Fatalf("got message %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no message %q", want)
	}
}

// TestAutoFallsBackTo311 checks protocol_version auto against a broker
// that speaks 3.1.1 only: it refuses the MQTT 5 CONNECT (with 3.1.1's
// return code 0x01, with MQTT 5's reason code 0x84, or by closing the
// connection), the client connects again with 3.1.1, messages flow, one
// INFO line names the choice, and the reconnect after the connection
// ends goes straight to 3.1.1.
func TestAutoFallsBackTo311(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse []byte
	}{
		{"return code 0x01", []byte{packets.Connack << 4, 2, 0, 1}},
		{"reason code 0x84", []byte{packets.Connack << 4, 3, 0, 0x84, 0}},
		{"closed without CONNACK", nil},
		// A 3.1.1 broker that does not check the protocol level accepts
		// the MQTT 5 CONNECT in 3.1.1's CONNACK (2 bytes, no properties).
		{"3.1.1 CONNACK accepting it", []byte{packets.Connack << 4, 2, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mqtttest.StartV311(t, tc.refuse, func(n int, c net.Conn, r *bufio.Reader) {
				if publish0(c, "m"+string(rune('0'+n))) != nil || n == 2 {
					return // the first connection accepted ends: the client reconnects
				}
				for {
					if _, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket); err != nil {
						return
					}
				}
			})
			var log testkit.LogBuffer
			msgs := make(chan string, 4)
			c := autoClient(t, b.URL(), &log, msgs)
			if err := connect(c); err != nil {
				t.Fatalf("connect: %v", err)
			}
			recv(t, msgs, "m2") // connection 1 was the refused MQTT 5 one
			recv(t, msgs, "m3") // the reconnect
			if v := c.Version(); v != 4 {
				t.Errorf("version %d, want 4 (3.1.1)", v)
			}
			if n := b.Refused(); n != 1 {
				t.Errorf("the broker refused %d MQTT 5 CONNECTs, want 1: the reconnect must keep 3.1.1", n)
			}
			if n := log.Count("INFO", "MQTT 3.1.1", "refused MQTT 5"); n != 1 {
				t.Errorf("%d INFO lines naming the fallback, want 1:\n%s", n, log.String())
			}
		})
	}
}

// TestAutoV5Broker checks that auto keeps MQTT 5 with a broker that
// takes it, and says so once.
func TestAutoV5Broker(t *testing.T) {
	b := mqtttest.StartV5(t, []byte{packets.Connack << 4, 3, 0, 0, 0}, func(_ int, c net.Conn, r *bufio.Reader) {
		for {
			if _, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket); err != nil {
				return
			}
		}
	})
	var log testkit.LogBuffer
	c := autoClient(t, b.URL(), &log, nil)
	if err := connect(c); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if v := c.Version(); v != 5 {
		t.Errorf("version %d, want 5", v)
	}
	if n := log.Count("INFO", "MQTT 5"); n != 1 {
		t.Errorf("%d INFO lines naming MQTT 5, want 1:\n%s", n, log.String())
	}
}

// TestAutoNoFallbackOnOtherErrors checks that only a refusal of the
// protocol version downgrades: a bad password (as MQTT 5's 0x86 or
// 3.1.1's 4) and a timeout fail the connect with their own error, after
// one connection, and leave the version undecided.
func TestAutoNoFallbackOnOtherErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		connack []byte
	}{
		{"reason code 0x86", []byte{packets.Connack << 4, 3, 0, 0x86, 0}},
		{"return code 4", []byte{packets.Connack << 4, 2, 0, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mqtttest.StartV311(t, tc.connack, func(int, net.Conn, *bufio.Reader) {})
			c := autoClient(t, b.URL(), &testkit.LogBuffer{}, nil)
			err := connect(c)
			var re *mqttc.RefusedError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), "password") {
				t.Fatalf("connect: got %v, want the broker's bad user name or password", err)
			}
			if n := b.Settled(t); n != 1 {
				t.Errorf("%d connections, want 1: no retry with 3.1.1", n)
			}
			if v := c.Version(); v != 0 {
				t.Errorf("version %d, want 0 (undecided)", v)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		// Silent to an MQTT 5 CONNECT, accepting 3.1.1: a retry would
		// succeed, and must not happen.
		var v4 atomic.Int32
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					r := bufio.NewReader(c)
					_, _, _, body, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
					if err != nil || len(body) < 7 {
						return
					}
					if body[6] != 5 {
						v4.Add(1)
						_, _ = c.Write([]byte{packets.Connack << 4, 2, 0, 0})
					}
					_, _, _, _, _ = mqttc.ReadPacket(r, mqtttest.MaxPacket) // silent until the client gives up
				}()
			}
		}()
		url := "tcp://" + l.Addr().String()
		o := testOptions(url)
		o.ProtocolVersion = mqttc.ProtocolAuto
		o.ConnectTimeout = 200 * time.Millisecond
		c := mqttc.New(o, mqttc.Handlers{})
		defer c.Disconnect(0)
		err = connect(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connect: got %v, want the timeout", err)
		}
		if n := v4.Load(); n != 0 {
			t.Errorf("%d 3.1.1 CONNECTs after a timeout, want 0", n)
		}
		if v := c.Version(); v != 0 {
			t.Errorf("version %d, want 0 (undecided)", v)
		}
	})
	t.Run("closed and 3.1.1 fails too", func(t *testing.T) {
		// Once takes one connection: the 3.1.1 retry finds none.
		url := mqtttest.Once(t, func(c net.Conn, r *bufio.Reader) {
			_, _, _, _, _ = mqttc.ReadPacket(r, mqtttest.MaxPacket)
		})
		c := autoClient(t, url, &testkit.LogBuffer{}, nil)
		if err := connect(c); err == nil {
			t.Fatal("connect succeeded")
		}
		if v := c.Version(); v != 0 {
			t.Errorf("version %d, want 0: a closed connection is a refusal only if 3.1.1 then succeeds", v)
		}
	})
}

// TestAutoFallbackRefusedWhenV5Needed checks that a client whose user
// needs MQTT 5 (Options.NeedsV5) does not fall back silently: the
// connect fails with an error that names the feature, a setup refusal.
// A connection closed without a CONNACK is confirmed by a 3.1.1 connect,
// which then ends with a DISCONNECT (no will).
func TestAutoFallbackRefusedWhenV5Needed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse []byte
	}{
		{"return code 0x01", []byte{packets.Connack << 4, 2, 0, 1}},
		{"closed without CONNACK", nil},
		// A 3.1.1 broker that does not check the protocol level accepts
		// the MQTT 5 CONNECT in 3.1.1's CONNACK (2 bytes, no properties).
		{"3.1.1 CONNACK accepting it", []byte{packets.Connack << 4, 2, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disconnected := make(chan bool, 1)
			b := mqtttest.StartV311(t, tc.refuse, func(_ int, _ net.Conn, r *bufio.Reader) {
				typ, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
				disconnected <- err == nil && typ == packets.Disconnect
			})
			o := testOptions(b.URL())
			o.ProtocolVersion = mqttc.ProtocolAuto
			o.NeedsV5 = "message_expiry"
			c := mqttc.New(o, mqttc.Handlers{})
			defer c.Disconnect(0)
			err := connect(c)
			if err == nil || !mqttc.RefusedSetup(err) || !strings.Contains(err.Error(), "message_expiry") || !strings.Contains(err.Error(), "MQTT 5") {
				t.Fatalf("connect: got %v, want a setup refusal naming message_expiry and MQTT 5", err)
			}
			if tc.refuse == nil && !<-disconnected {
				t.Error("the 3.1.1 connection that confirmed the refusal ended without a DISCONNECT")
			}
		})
	}
}
