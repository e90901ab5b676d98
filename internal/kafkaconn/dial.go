package kafkaconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// Traffic is told of a connection's traffic: bytes read, bytes written,
// and errors (of the dial, the TLS handshake, a read or a write).
type Traffic interface {
	ReadNow()
	WroteNow()
	Failed(err error)
}

// writeChunk bounds one write to the socket, so that a large request on a
// slow uplink shows progress as it goes rather than once at its end.
const writeChunk = 32 << 10

// Dialer returns franz-go's dial function: a TCP dial within timeout, with
// TLS on top when tc is set (cloned per dial, ServerName defaulting to the
// host dialled, as kgo.DialTLSConfig does), over a connection that reports
// its traffic to t. A dial that fails because ctx ended is not reported.
func Dialer(t Traffic, timeout time.Duration, tc *tls.Config) func(ctx context.Context, network, host string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		raw, err := d.DialContext(ctx, network, host)
		if err != nil {
			if ctx.Err() == nil {
				t.Failed(err)
			}
			return nil, err
		}
		var c net.Conn = &liveConn{Conn: raw, t: t}
		if tc == nil {
			return c, nil
		}
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			server, _, err := net.SplitHostPort(host)
			if err != nil {
				raw.Close()
				return nil, fmt.Errorf("unable to split host:port for dialing: %w", err)
			}
			cfg.ServerName = server
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		tlsConn := tls.Client(c, cfg)
		if err := tlsConn.HandshakeContext(hctx); err != nil {
			raw.Close()
			t.Failed(err)
			return nil, err
		}
		return tlsConn, nil
	}
}

// liveConn reports the bytes it moves, and its errors, to a Traffic. A
// large response on a slow uplink shows as progress as it arrives.
type liveConn struct {
	net.Conn
	t Traffic
}

func (c *liveConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.t.ReadNow()
	}
	if err != nil {
		c.t.Failed(err)
	}
	return n, err
}

func (c *liveConn) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n, err := c.Conn.Write(b[:min(len(b), writeChunk)])
		written += n
		if n > 0 {
			c.t.WroteNow()
		}
		if err != nil {
			c.t.Failed(err)
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
