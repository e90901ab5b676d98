package mqtt

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// connReadBuffer is the read buffer per broker connection: several typical
// sensor messages per system call.
const connReadBuffer = 16 << 10

// openConn opens the connection to the broker as paho itself does (tcp and
// mqtt through a proxy from the environment, ssl/tls/mqtts with the TLS
// config, ws and wss with paho's websocket), and buffers its reads. paho
// reads a packet's fixed header a byte at a time and then its body: on a bare
// connection that is three or more read system calls per message, a fifth
// of the agent's CPU at 40k messages/s.
func openConn(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 30 * time.Second}
	}
	var (
		c   net.Conn
		err error
	)
	switch uri.Scheme {
	case "mqtt", "tcp":
		c, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		c, err = tls.DialWithDialer(d, "tcp", uri.Host, o.TLSConfig)
	case "ws", "wss":
		u := *uri // the websocket dialer refuses URLs with user info
		u.User = nil
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		c, err = paho.NewWebsocket(u.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	default:
		return nil, fmt.Errorf("mqtt: broker %s: unknown scheme %q", uri.Redacted(), uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, connReadBuffer)}, nil
}

// bufConn is a connection whose reads go through a buffer.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

// Read reads from the buffer, refilling it from the connection.
func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
