package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// liveness tracks the traffic between the client and the brokers, to tell
// a cluster that went away from one that is merely quiet. A consumer is
// never quiet for long while it has room: a broker answers every fetch
// within fetch_max_wait, records or not, and a group member heartbeats.
// So the brokers count as unreachable when nothing was read from any of
// them for unreachable_after and either connections have been failing
// (refused, reset, a failed TLS handshake) for as long, or a request has
// waited that long for its answer (a broker that hangs, packets
// black-holed). A source that stopped fetching (the pipeline holds its
// in-flight budget) sends nothing and so waits for nothing: it is not
// reported. The connections of every client of the source share it.
type liveness struct {
	read    atomic.Int64          // unix nanos of the last byte read
	pending atomic.Int64          // unix nanos of the first write since the last read; 0: none
	errAt   atomic.Int64          // unix nanos of the first connection error since the last read; 0: none
	err     atomic.Pointer[error] // the last connection error since the last read
}

func (l *liveness) readNow() {
	l.read.Store(time.Now().UnixNano())
	if l.pending.Load() != 0 {
		l.pending.Store(0)
	}
	if l.errAt.Load() != 0 {
		l.errAt.Store(0)
		l.err.Store(nil)
	}
}

func (l *liveness) wroteNow() { l.pending.CompareAndSwap(0, time.Now().UnixNano()) }

func (l *liveness) failed(err error) {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		// franz-go closing its own connections, or a broker closing an
		// idle one, says nothing; a broker that went away also refuses
		// the next dial.
		return
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// franz-go's own deadline on a request: the request waits
		// unanswered, which pending already counts.
		return
	}
	l.errAt.CompareAndSwap(0, time.Now().UnixNano())
	l.err.Store(&err)
}

// reset starts afresh, as if the brokers had just answered: a new client.
func (l *liveness) reset() {
	l.readNow()
}

// unreachable reports whether the brokers have been silent for at least
// after (see liveness), and the last connection error since the last
// read, if any.
func (l *liveness) unreachable(after time.Duration) (bool, error) {
	now := time.Now().UnixNano()
	if now-l.read.Load() < int64(after) {
		return false, nil
	}
	failing := l.errAt.Load() != 0 && now-l.errAt.Load() >= int64(after)
	waiting := l.pending.Load() != 0 && now-l.pending.Load() >= int64(after)
	if !failing && !waiting {
		return false, nil
	}
	if e := l.err.Load(); e != nil {
		return true, *e
	}
	return true, nil
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

// liveConn reports the bytes it moves, and its errors, to a liveness. A
// large fetch response on a slow uplink shows as progress as it arrives.
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
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.l.wroteNow()
	}
	if err != nil {
		c.l.failed(err)
	}
	return n, err
}
