package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// liveness tracks the traffic between the client and the brokers: when a
// byte was last read from one, when one was last written, and the last
// connection error since the last read. It tells a cluster that went away
// (connections refused or reset, requests unanswered) from one that is slow
// or merely quiet: a slow uplink still moves bytes, a loaded broker still
// answers, and franz-go waiting between metadata loads (for a topic that is
// not there yet) has had its answers. It is shared by every connection of
// the sink's clients.
type liveness struct {
	read  atomic.Int64          // unix nanos of the last byte read
	wrote atomic.Int64          // unix nanos of the last byte written
	err   atomic.Pointer[error] // the last dial or connection error since the last read
}

func (l *liveness) readNow() {
	l.read.Store(time.Now().UnixNano())
	if l.err.Load() != nil {
		l.err.Store(nil)
	}
}

func (l *liveness) wroteNow() { l.wrote.Store(time.Now().UnixNano()) }

func (l *liveness) failed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return // franz-go's own deadlines and closes say nothing new
	}
	l.err.Store(&err)
}

// unreachable reports whether, for a wait that began at start, the cluster
// has been silent for at least after: nothing read for that long, and
// either a connection failed since the last read (refused, reset, a
// handshake that failed) or a request was written after the last read and
// nothing was written since (unanswered: a broker that hangs, packets that
// are black-holed). cause is the connection error, if any.
func (l *liveness) unreachable(start time.Time, after time.Duration) (bool, error) {
	now := time.Now()
	if now.Sub(start) < after {
		return false, nil
	}
	read, wrote := time.Unix(0, l.read.Load()), time.Unix(0, l.wrote.Load())
	if now.Sub(read) < after {
		return false, nil
	}
	if e := l.err.Load(); e != nil {
		return true, *e
	}
	return wrote.After(read) && now.Sub(wrote) >= after, nil
}

// lastErr returns the last connection error since the last read, or nil.
func (l *liveness) lastErr() error {
	if e := l.err.Load(); e != nil {
		return *e
	}
	return nil
}

// dialer returns franz-go's dial function: a TCP dial within timeout, with
// TLS on top when tc is set (cloned per dial, ServerName defaulting to the
// host dialled, as kgo.DialTLSConfig does), over a connection that reports
// its traffic to l.
func (l *liveness) dialer(timeout time.Duration, tc *tls.Config) func(ctx context.Context, network, host string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		raw, err := d.DialContext(ctx, network, host)
		if err != nil {
			if ctx.Err() == nil {
				l.failed(err)
			}
			return nil, err
		}
		var c net.Conn = &liveConn{Conn: raw, l: l}
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
			l.failed(err)
			return nil, err
		}
		return tlsConn, nil
	}
}

// writeChunk bounds one write to the socket, so that a large produce request
// on a slow uplink shows progress as it goes rather than once at its end.
const writeChunk = 32 << 10

// liveConn reports the bytes it moves, and its errors, to a liveness.
type liveConn struct {
	net.Conn
	l *liveness
}

func (c *liveConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.l.readNow()
	}
	if err != nil {
		c.l.failed(err)
	}
	return n, err
}

func (c *liveConn) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n, err := c.Conn.Write(b[:min(len(b), writeChunk)])
		written += n
		if n > 0 {
			c.l.wroteNow()
		}
		if err != nil {
			c.l.failed(err)
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
