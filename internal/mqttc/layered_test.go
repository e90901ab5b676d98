package mqttc

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestGatherReaderNoWaitLayered checks that a read of a TLS or websocket
// connection never waits readGather: each Read of those returns one
// record or message, and the server here, as mosquitto does, sends each
// message in its own, so every read is small. A wait before each capped a
// QoS 0 flood over TLS at 840 messages/s. TLS is taken for a stream whose
// drained state is known (reads paced under MQTT 5; see recordReader and
// TestReadPaceGathersTLS), a websocket is not.
func TestGatherReaderNoWaitLayered(t *testing.T) {
	const n, size = 50, 20
	msg := []byte(strings.Repeat("m", size))
	for _, tc := range []struct {
		name   string
		stream bool
		serve  func(t *testing.T) (*url.URL, *tls.Config)
	}{
		{"tls", true, func(t *testing.T) (*url.URL, *tls.Config) {
			hs := httptest.NewUnstartedServer(nil)
			hs.StartTLS() // for its certificate, valid for 127.0.0.1
			t.Cleanup(hs.Close)
			l, err := tls.Listen("tcp", "127.0.0.1:0", hs.TLS)
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
				for range n {
					if _, err := c.Write(msg); err != nil { // one TLS record each
						return
					}
				}
				_, _ = io.Copy(io.Discard, c)
			}()
			roots := x509.NewCertPool()
			roots.AddCert(hs.Certificate())
			u, _ := url.Parse("ssl://" + l.Addr().String())
			return u, &tls.Config{RootCAs: roots}
		}},
		{"websocket", false, func(t *testing.T) (*url.URL, *tls.Config) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
				c, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer c.Close()
				for range n {
					if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
						return
					}
				}
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}))
			t.Cleanup(hs.Close)
			u, _ := url.Parse("ws" + strings.TrimPrefix(hs.URL, "http"))
			return u, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, cfg := tc.serve(t)
			c, err := openConn(u, cfg, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			waits := 0
			c.g.sleep = func(d time.Duration) { waits++; time.Sleep(d) } // the reader is this goroutine
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, n*size)); err != nil {
				t.Fatalf("read %d messages: %v", n, err)
			}
			if waits != 0 {
				t.Errorf("%d reads waited readGather, want none", waits)
			}
			if c.stream() != tc.stream {
				t.Errorf("stream() = %v, want %v", c.stream(), tc.stream)
			}
		})
	}
}
