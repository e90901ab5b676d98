package mqttc

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"time"
)

// tlsRecordHeader is the length of a TLS record's header: type (1),
// version (2), length of the body (2).
const tlsRecordHeader = 5

// recordReader sits between crypto/tls and the socket of a TLS
// connection, so that a paced read over TLS knows when the socket is
// drained (see bufConn.drained). A Read of a tls.Conn returns the
// plaintext of one record, and mosquitto sends each message in its own
// record: a small read of the tls.Conn says nothing about the socket.
// recordReader reads the socket in large reads into its own buffer and
// hands crypto/tls at most the rest of one record per Read, never a byte
// of the next. crypto/tls reads a record's header, then at least the rest
// of it (readFromUntil), and stops at the first Read past that: so when a
// Read of the tls.Conn returns, its own raw input is empty, and all the
// ciphertext read from the socket and not yet decrypted is here. The
// socket is drained when this buffer is empty and its last read came up
// short (filled less than half of the room it had), as a bare TCP read is
// judged.
//
// Writes, deadlines and Close go straight to the socket (embedded). Only
// the reading goroutine calls Read (through tls.Conn, under its input
// lock), and only it looks at the fields (drained, took).
type recordReader struct {
	net.Conn
	buf   []byte
	r, w  int           // buf[r:w] is read from the socket, not yet handed on
	left  int           // bytes of the current record not yet handed on; 0 at a record boundary
	err   error         // a socket read's error that came with data: returned by the next fill
	short bool          // the last socket read filled less than half of the room it had
	took  time.Duration // how long the last socket read waited for its data
	read  int64         // bytes read from the socket so far
	// asked is bufConn.asked, emptied before every socket read (see
	// gatherReader.asked): over TLS the reads that may find an answer are
	// the socket's, not the tls.Conn's.
	asked <-chan struct{}
	now   func() time.Time
}

func newRecordReader(c net.Conn) *recordReader {
	return &recordReader{Conn: c, buf: make([]byte, connReadBuffer), now: time.Now}
}

// Read hands on the buffered bytes of the current record, up to len(p),
// reading the socket when none are buffered.
func (rr *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if rr.left == 0 { // a record boundary: learn the next record's length
		for rr.w-rr.r < tlsRecordHeader {
			if err := rr.fill(); err != nil {
				if rr.w == rr.r {
					return 0, err
				}
				// A part of a header, then the end: crypto/tls reports
				// the truncated record.
				rr.err = err
				break
			}
		}
		if rr.w-rr.r >= tlsRecordHeader {
			rr.left = tlsRecordHeader + int(binary.BigEndian.Uint16(rr.buf[rr.r+3:rr.r+tlsRecordHeader]))
		} else {
			rr.left = rr.w - rr.r
		}
	}
	if rr.r == rr.w {
		if err := rr.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p[:min(len(p), rr.left)], rr.buf[rr.r:rr.w])
	rr.r += n
	rr.left -= n
	return n, nil
}

// fill reads the socket once into the buffer's free room, after moving
// what is buffered (at most a part of a record header) to its start.
func (rr *recordReader) fill() error {
	if err := rr.err; err != nil {
		rr.err = nil
		return err
	}
	rr.w = copy(rr.buf, rr.buf[rr.r:rr.w])
	rr.r = 0
	select {
	case <-rr.asked:
	default:
	}
	room := len(rr.buf) - rr.w
	start := rr.now()
	n, err := rr.Conn.Read(rr.buf[rr.w:])
	rr.took = rr.now().Sub(start)
	rr.short = n > 0 && n < room/2
	rr.w += n
	rr.read += int64(n)
	if n > 0 {
		rr.err = err
		return nil
	}
	if err == nil { // a Read of a net.Conn returns data or an error
		return nil
	}
	return err
}

// drained reports whether all the ciphertext read from the socket has
// been handed to crypto/tls, at a record's end (after a read that failed
// midway, crypto/tls may keep a part of a record), and the last socket
// read came up short.
func (rr *recordReader) drained() bool { return rr.r == rr.w && rr.left == 0 && rr.short }

// dialTLS opens a TLS connection to addr as tls.DialWithDialer does (the
// server name from addr unless tc names one; dial and handshake within
// timeout), with a recordReader between crypto/tls and the socket.
func dialTLS(d *net.Dialer, addr string, tc *tls.Config, timeout time.Duration) (*tls.Conn, *recordReader, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if tc == nil {
		tc = &tls.Config{}
	}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		tc = tc.Clone()
		tc.ServerName = host
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	rr := newRecordReader(raw)
	c := tls.Client(rr, tc)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, nil, err
	}
	return c, rr, nil
}
