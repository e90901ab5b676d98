package mqtt

import (
	"bufio"
	"net"
	"slices"
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
