package mqttc_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
)

// TestTLSHandshakeAndClose checks the TLS connection dialled over the
// recordReader: the server name comes from the broker's address (the
// certificate is verified for 127.0.0.1; the caller's configuration is
// not changed), and Disconnect sends the DISCONNECT, then closes the
// connection, which the broker reads as a clean end (io.EOF).
func TestTLSHandshakeAndClose(t *testing.T) {
	stc, ctc := testTLS(t)
	ended := make(chan error, 1)
	url := mqtttest.StartV5TLS(t, stc, []byte{packets.Connack << 4, 3, 0, 0, 0}, func(_ int, _ net.Conn, r *bufio.Reader) {
		typ, _, _, _, err := mqttc.ReadPacket(r, 1<<20)
		if err == nil && typ != packets.Disconnect {
			err = errors.New("not a DISCONNECT")
		}
		if err == nil {
			_, err = r.ReadByte()
		}
		ended <- err
	}).URL()
	o := testOptions(url)
	o.ProtocolVersion, o.ReadPace, o.TLS = 5, time.Minute, ctc
	c := mqttc.New(o, mqttc.Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if ctc.ServerName != "" {
		t.Errorf("the caller's tls.Config got ServerName %q", ctc.ServerName)
	}
	c.Disconnect(0)
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Errorf("the broker read %v after the connect, want a DISCONNECT then io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the broker saw no end of the connection")
	}
}

// TestTLSHandshakeTimeout checks that a server that accepts the TCP
// connection and never answers the TLS handshake fails the connect
// within ConnectTimeout, with an error.
func TestTLSHandshakeTimeout(t *testing.T) {
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
			defer c.Close() // silent until the test ends
		}
	}()
	_, ctc := testTLS(t)
	o := testOptions("ssl://" + l.Addr().String())
	o.ConnectTimeout, o.TLS = 200*time.Millisecond, ctc
	c := mqttc.New(o, mqttc.Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Connect(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("connect succeeded without a handshake")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("connect still waiting for a handshake after 20s (ConnectTimeout 200ms)")
	}
	c.Disconnect(0)
}
