package mqtttest_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
)

// TestSubscribe checks the broker's SUBSCRIBE script against the client:
// every filter is parsed and answered with the code given, a refusal
// fails Subscribe naming each filter, a grant lets it succeed; Settled
// counts the one connection.
func TestSubscribe(t *testing.T) {
	got := make(chan []string, 2)
	b := mqtttest.Start(t, func(_ int, c net.Conn, r *bufio.Reader) {
		for _, code := range []byte{0x80, 1} {
			filters, ok := mqtttest.Subscribe(c, r, code)
			if !ok {
				return
			}
			got <- filters
		}
		_, _ = io.Copy(io.Discard, r) // until the client goes
	})
	cl := mqttc.New(mqttc.Options{Brokers: []string{b.URL()}, ClientID: "t", KeepAlive: 30 * time.Second,
		ConnectTimeout: 5 * time.Second, MaxReconnect: time.Second}, mqttc.Handlers{})
	defer cl.Disconnect(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	filters := map[string]byte{"a/#": 1, "b": 0}
	err := cl.Subscribe(ctx, filters)
	if err == nil || !strings.Contains(err.Error(), `"a/#"`) || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("first subscribe: got %v, want both filters refused", err)
	}
	if err := cl.Subscribe(ctx, filters); err != nil {
		t.Errorf("second subscribe: %v, want granted", err)
	}
	for i := range 2 {
		if f := <-got; !slices.Equal(f, []string{"a/#", "b"}) {
			t.Errorf("SUBSCRIBE %d: broker read filters %q, want [a/# b]", i+1, f)
		}
	}
	if n := b.Settled(t); n != 1 {
		t.Errorf("got %d connections, want 1", n)
	}
}

// TestOnce checks that Once serves one connection and refuses the next.
func TestOnce(t *testing.T) {
	served := make(chan bool, 1)
	url := mqtttest.Once(t, func(c net.Conn, r *bufio.Reader) { served <- mqtttest.Handshake(c, r) })
	cl := mqttc.New(mqttc.Options{Brokers: []string{url}, ClientID: "t", KeepAlive: 30 * time.Second,
		ConnectTimeout: 5 * time.Second, MaxReconnect: time.Second}, mqttc.Handlers{})
	defer cl.Disconnect(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if !<-served {
		t.Error("the handshake failed")
	}
	if c, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://")); err == nil {
		c.Close()
		t.Error("a second connection was accepted")
	}
}
