// Package mqtttest is a scripted MQTT broker for tests: it listens on a
// loopback port, accepts each CONNECT and hands the connection to a
// script, which reads what the client sends (mqttc.ReadPacket) and writes
// the broker's packets as raw bytes. A test can so make a broker do what
// mosquitto will not: refuse a subscription (mosquitto 2.0.11 grants one
// its ACL denies), fall silent, close a connection at a chosen moment,
// send a malformed packet. It is imported by tests only.
package mqtttest

import (
	"bufio"
	"crypto/tls"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/wait"
)

// MaxPacket is the largest packet body the helpers read whole.
const MaxPacket = 1 << 20

// Script serves one connection once its CONNECT is accepted: n counts the
// broker's connections from 1 in the order accepted, and r reads what the
// client sends (read through r, not c: it may hold bytes already). The
// connection is closed when the script returns.
type Script func(n int, c net.Conn, r *bufio.Reader)

// Broker is a scripted broker on a loopback port; it stops listening when
// the test ends. A script still running then ends when its connection
// does (the client's Disconnect).
type Broker struct {
	l      net.Listener
	scheme string // of URL: tcp, or ssl for StartV5TLS

	conns   atomic.Int32
	refused *atomic.Int32 // StartV311's refusals of a CONNECT of another level
	mu      sync.Mutex
	peers   []string // remote addresses in the order accepted
}

// Start starts a broker that answers every MQTT 3.1.1 CONNECT with a
// CONNACK that accepts it (no session present) and then runs serve on the
// connection, each on a goroutine of its own.
func Start(t testing.TB, serve Script) *Broker {
	t.Helper()
	return start(t, listen(t, nil), func(c net.Conn, r *bufio.Reader) bool { return Handshake(c, r) }, serve)
}

// StartV5 is Start for MQTT 5 clients: it takes only a CONNECT of protocol
// level 5 and answers it with connack, a whole CONNACK packet (its reason
// code and properties are the test's).
func StartV5(t testing.TB, connack []byte, serve Script) *Broker {
	t.Helper()
	return start(t, listen(t, nil), acceptV5(connack), serve)
}

// StartV5TLS is StartV5 over TLS with the server configuration tc: each
// Write of a script is one TLS record, as mosquitto sends each packet.
// URL is then an ssl:// URL.
func StartV5TLS(t testing.TB, tc *tls.Config, connack []byte, serve Script) *Broker {
	t.Helper()
	b := start(t, listen(t, tc), acceptV5(connack), serve)
	b.scheme = "ssl"
	return b
}

// acceptV5 takes only a CONNECT of protocol level 5 and answers it with
// connack.
func acceptV5(connack []byte) func(c net.Conn, r *bufio.Reader) bool {
	return func(c net.Conn, r *bufio.Reader) bool {
		typ, _, _, body, err := mqttc.ReadPacket(r, MaxPacket)
		if err != nil || typ != packets.Connect || len(body) < 7 || body[6] != 5 {
			return false
		}
		_, err = c.Write(connack)
		return err == nil
	}
}

// listen listens on a loopback port, over TLS with tc unless it is nil,
// until the test ends.
func listen(t testing.TB, tc *tls.Config) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	return l
}

// RefuseVersion returns a 3.1.1 broker's answer to an MQTT 5 CONNECT, for
// StartV311: a CONNACK with return code 0x01, unacceptable protocol
// version.
func RefuseVersion() []byte { return []byte{packets.Connack << 4, 2, 0, 1} }

// StartV311 starts a broker that speaks MQTT 3.1.1 only: it accepts a
// CONNECT of protocol level 4 as Start does, and answers a CONNECT of any
// other level with refuse, a whole packet (a 3.1.1 CONNACK with return
// code 0x01, or an MQTT 5 CONNACK with reason code 0x84), or closes the
// connection without an answer when refuse is nil. Refused counts them.
func StartV311(t testing.TB, refuse []byte, serve Script) *Broker {
	t.Helper()
	refused := new(atomic.Int32)
	b := start(t, listen(t, nil), func(c net.Conn, r *bufio.Reader) bool {
		typ, _, _, body, err := mqttc.ReadPacket(r, MaxPacket)
		if err != nil || typ != packets.Connect || len(body) < 7 {
			return false
		}
		if body[6] != 4 {
			refused.Add(1)
			if refuse != nil {
				_, _ = c.Write(refuse)
			}
			return false
		}
		_, err = c.Write([]byte{packets.Connack << 4, 2, 0, 0})
		return err == nil
	}, serve)
	b.refused = refused
	return b
}

// Refused returns how many CONNECTs StartV311's broker has refused.
func (b *Broker) Refused() int {
	if b.refused == nil {
		return 0
	}
	return int(b.refused.Load())
}

func start(t testing.TB, l net.Listener, accept func(c net.Conn, r *bufio.Reader) bool, serve Script) *Broker {
	t.Helper()
	b := &Broker{l: l, scheme: "tcp"}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := int(b.conns.Add(1))
			b.mu.Lock()
			b.peers = append(b.peers, c.RemoteAddr().String())
			b.mu.Unlock()
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if accept(c, r) {
					serve(n, c, r)
				}
			}()
		}
	}()
	return b
}

// URL is the broker's address as a tcp:// URL (ssl:// for StartV5TLS).
func (b *Broker) URL() string { return b.scheme + "://" + b.l.Addr().String() }

// Conns returns how many connections the broker has accepted so far
// (Settled's marker connections included).
func (b *Broker) Conns() int { return int(b.conns.Load()) }

// Settled returns how many client connections the broker has accepted,
// counting every connection dialled before the call: it dials a marker
// connection of its own and waits until the broker has accepted it, after
// the ones queued before it.
func (b *Broker) Settled(t testing.TB) int {
	t.Helper()
	c, err := net.Dial("tcp", b.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	marker := c.LocalAddr().String()
	var n int
	wait.For(t, 5*time.Second, "the broker to accept the marker connection", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		n = slices.Index(b.peers, marker)
		return n >= 0
	})
	return n
}

// Once accepts one connection on a loopback port, then stops listening (a
// reconnect is refused), and runs serve on it from its first byte: the
// script answers the CONNECT itself (see Handshake). It returns the
// broker's URL.
func Once(t testing.TB, serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, bufio.NewReader(c))
	}()
	return "tcp://" + l.Addr().String()
}

// Handshake reads the client's CONNECT and accepts it with an MQTT 3.1.1
// CONNACK; it reports false if the connection ended or sent something
// else first.
func Handshake(c net.Conn, r *bufio.Reader) bool {
	typ, _, _, _, err := mqttc.ReadPacket(r, MaxPacket)
	if err != nil || typ != packets.Connect {
		return false
	}
	_, err = c.Write([]byte{packets.Connack << 4, 2, 0, 0})
	return err == nil
}

// Subscribe reads the client's packets up to its next SUBSCRIBE (MQTT
// 3.1.1), answering PINGREQs and dropping the rest, and answers it with a
// SUBACK that gives code to every filter: the QoS granted, or 0x80 to
// refuse it. It returns the filters, or false if the connection ended
// first or the SUBSCRIBE is malformed (or has more than 125 filters).
func Subscribe(c net.Conn, r *bufio.Reader, code byte) ([]string, bool) {
	for {
		typ, _, _, body, err := mqttc.ReadPacket(r, MaxPacket)
		if err != nil {
			return nil, false
		}
		switch typ {
		case packets.Pingreq:
			if _, err := c.Write([]byte{packets.Pingresp << 4, 0}); err != nil {
				return nil, false
			}
		case packets.Subscribe:
			if len(body) < 2 {
				return nil, false
			}
			var filters []string
			for rest := body[2:]; len(rest) > 0; {
				if len(rest) < 2 {
					return nil, false
				}
				n := int(rest[0])<<8 | int(rest[1])
				if len(rest) < 2+n+1 {
					return nil, false
				}
				filters = append(filters, string(rest[2:2+n]))
				rest = rest[2+n+1:] // the filter and its QoS
			}
			if len(filters) > 125 { // the SUBACK's remaining length is one byte
				return nil, false
			}
			ack := []byte{packets.Suback << 4, byte(2 + len(filters)), body[0], body[1]}
			for range filters {
				ack = append(ack, code)
			}
			_, err := c.Write(ack)
			return filters, err == nil
		}
	}
}
