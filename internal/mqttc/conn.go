package mqttc

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/proxy"
)

// connReadBuffer is the read buffer per broker connection: several typical
// sensor messages per system call.
const connReadBuffer = 16 << 10

// openConn opens the connection to the broker as paho's client does (tcp
// and mqtt through a proxy from the environment, ssl/tls/mqtts with tc, ws
// and wss over a websocket, see dialWebsocket), each step bounded by timeout, buffers its
// reads and gathers its writes (see bufConn). A packet's fixed header is
// read a byte at a time and then its body: on a bare connection that would
// be three or more read system calls per message.
func openConn(uri *url.URL, tc *tls.Config, timeout time.Duration) (*bufConn, error) {
	d := &net.Dialer{Timeout: timeout}
	var (
		c   net.Conn
		rr  *recordReader // under crypto/tls
		err error
	)
	switch uri.Scheme {
	case "mqtt", "tcp":
		c, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		c, rr, err = dialTLS(d, uri.Host, tc, timeout)
	case "ws", "wss":
		u := *uri // the websocket dialer refuses URLs with user info
		u.User = nil
		if uri.Scheme == "ws" {
			tc = nil
		}
		c, err = dialWebsocket(u.String(), tc, timeout)
	default:
		return nil, fmt.Errorf("mqtt: broker %s: unknown scheme %q", uri.Redacted(), uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	raw := c
	if rr != nil {
		raw = rr.Conn
	} else if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // websocket
		raw = nc.NetConn()
	}
	bc := &bufConn{Conn: c, raw: raw,
		kick: make(chan struct{}, 1), done: make(chan struct{}), ended: make(chan struct{}), asked: make(chan struct{}, 1)}
	bc.lowat = newLowat(raw)
	bc.g = &gatherReader{c: c, layered: raw != c, rec: rr, sleep: time.Sleep, now: time.Now, asked: bc.asked}
	if rr != nil {
		rr.asked = bc.asked
	}
	bc.markAt = bc.g.now()
	bc.r = bufio.NewReaderSize(bc.g, connReadBuffer)
	go bc.sender()
	return bc, nil
}

// readGather is how long a read waits after one that found the socket
// nearly empty. The broker writes every message on its own and the client
// takes each as it comes: at 100k messages/s most reads then returned one
// message, and those read system calls were a third of the agent's CPU at
// QoS 0. Waiting lets a few dozen messages gather per read at high rates; at
// low rates it only delays each message by this much.
const readGather = 200 * time.Microsecond

// gatherReader reads the connection, waiting readGather before a read when
// the previous one filled less than half of its buffer without having had
// to wait readGather for its data: a stream that sparse (a few thousand
// messages/s) gathers nothing in the wait, which would only add a timer
// wake-up per message. It never waits over TLS or a websocket (layered): a
// Read of those returns one TLS record or one websocket message, and
// mosquitto sends each MQTT message in its own, so every read is small and
// the wait came before every message: a QoS 0 flood over TLS went at 840
// messages/s against 81,000 over TCP (20,000 messages from mosquitto,
// 2026-12-07), 121,000 without the wait.
//
// Over TLS, rec is the recordReader under crypto/tls, which knows about
// the socket's reads; small then means that the last Read delivered all
// the plaintext crypto/tls held (it returned less than asked).
type gatherReader struct {
	c       io.Reader
	layered bool          // TLS or a websocket: a small read does not mean a drained socket
	rec     *recordReader // under crypto/tls; nil for TCP or a websocket
	small   bool          // the last read filled less than half of its buffer (over TLS: less than all)
	took    time.Duration // how long the last read waited for its data
	read    int64         // bytes read so far (over TLS: from the socket, by rec)
	// asked is bufConn.asked: emptied before every read, so that what it
	// holds at a pause is a request made since the last read began (over
	// TLS, by rec before every socket read instead).
	asked <-chan struct{}
	sleep func(time.Duration) // time.Sleep; tests record it
	now   func() time.Time    // time.Now; tests set it
}

func (g *gatherReader) Read(p []byte) (int, error) {
	if g.small && g.took < readGather && !g.layered {
		g.sleep(readGather)
	}
	if g.rec != nil {
		n, err := g.c.Read(p)
		g.small = n > 0 && n < len(p)
		g.read = g.rec.read // the socket's bytes, for the pause's mark
		return n, err
	}
	select {
	case <-g.asked:
	default:
	}
	start := g.now()
	n, err := g.c.Read(p)
	g.read += int64(max(n, 0))
	g.small = n > 0 && n < len(p)/2
	g.took = g.now().Sub(start)
	return n, err
}

// drained reports whether the data read so far is all the socket had: the
// last read filled less than half of its buffer, and the buffer is empty.
// Over TLS: the buffer is empty, crypto/tls delivered all the plaintext it
// had, and the recordReader under it holds no ciphertext and its last
// socket read filled less than half of its buffer.
func (c *bufConn) drained() bool {
	return c.r.Buffered() == 0 && c.g.small && (c.g.rec == nil || c.g.rec.drained())
}

// stream reports whether drained can tell a drained socket: over bare TCP
// or TLS (through the recordReader under crypto/tls), not over a
// websocket, whose Read returns one websocket message (mosquitto sends
// each MQTT message in its own) from a buffer of gorilla/websocket's that
// the client cannot see: a pause after each small read would let one
// message through per pause.
func (c *bufConn) stream() bool { return !c.g.layered || c.g.rec != nil }

// sparse reports whether the last socket read waited d or longer for its
// data: messages come further apart than d, and a pause of d would gather
// nothing but add a timer wake-up.
func (c *bufConn) sparse(d time.Duration) bool {
	if c.g.rec != nil {
		return c.g.rec.took >= d
	}
	return c.g.took >= d
}

// pause waits d before the next read, or less if the client makes a
// request meanwhile (see ask) or the connection is closed. It runs on the
// reading goroutine only, between packets (see Options.ReadPace): the
// messages that arrive meanwhile wait in the socket, at most d each, and
// are read with one system call and handed on together. At a few hundred
// or thousand messages/s the agent's CPU goes to per-burst costs (a thread
// woken, the Go runtime's monitor woken by the read's system call, a batch
// through the pipeline) far more than to per-message ones, so fewer,
// fuller bursts cost less CPU per message. Meanwhile the socket's receive
// low-water mark is raised (Linux, see pauseMark), so that the messages
// arriving do not each wake the runtime's network poller. PUBACKs do not
// end a pause: they come once per group commit, and would otherwise cut
// every pause short into a batch of one.
//
// Where the socket can be waited on (Linux), a pause also ends once the
// mark's bytes are queued: a flood that begins after a quiet spell, when
// the rate estimate still gives a long pause, is read as soon as twice
// what the pause was to bring has come, instead of waiting out the pause
// with the broker's window full (the first pause of such a flood cost up
// to max_read_pace of standstill).
func (c *bufConn) pause(d time.Duration) {
	c.g.small = false // the wait is done: no readGather on top
	now := c.g.now()
	mark := pauseMark(c.g.read-c.markRead, now.Sub(c.markAt), d)
	c.lowat.set(mark)
	c.markRead, c.markAt = c.g.read, now
	if c.lowat.canWait() {
		c.waitMark(time.Now().Add(d), mark)
	} else {
		if c.pauseT == nil {
			c.pauseT = time.NewTimer(d)
		} else {
			c.pauseT.Reset(d)
		}
		select {
		case <-c.pauseT.C:
		case <-c.asked:
		case <-c.done:
		}
		c.pauseT.Stop()
	}
	c.lowat.set(1)
}

// waitMark waits until the socket holds mark bytes, or until, or until a
// request or Close ends the pause (interruptPause): the wait is a read of
// the socket's readiness with until as its read deadline.
func (c *bufConn) waitMark(until time.Time, mark int) {
	c.pmu.Lock()
	// pausing is set before asked is looked at, and ask sends before it
	// looks at pausing: one of the two sees the other.
	c.pausing.Store(true)
	select {
	case <-c.asked: // a request already awaits its answer
		c.pausing.Store(false)
		c.pmu.Unlock()
		return
	case <-c.done:
		c.pausing.Store(false)
		c.pmu.Unlock()
		return
	default:
	}
	_ = c.raw.SetReadDeadline(until)
	c.pmu.Unlock()
	_ = c.lowat.waitQueued(mark) // a deadline, a close or the mark: read on
	c.pmu.Lock()
	c.pausing.Store(false)
	_ = c.raw.SetReadDeadline(time.Time{})
	c.pmu.Unlock()
}

// interruptPause ends a waitMark in progress, by moving its deadline into
// the past. Outside a pause it costs an atomic load: ask calls it for
// every QoS 1 or 2 PUBLISH.
func (c *bufConn) interruptPause() {
	if !c.pausing.Load() {
		return
	}
	c.pmu.Lock()
	if c.pausing.Load() {
		_ = c.raw.SetReadDeadline(time.Unix(1, 0))
	}
	c.pmu.Unlock()
}

// Bounds of a pause's receive low-water mark (see pauseMark).
const (
	// minPauseLowat is the mark of a pause after reads that brought
	// little, or of the first pause: half a read buffer.
	minPauseLowat = connReadBuffer / 2
	// maxPauseLowat bounds the mark, and with it how far the kernel
	// raises the socket's receive buffer to fit it (tcp_set_rcvlowat: to
	// about twice the mark, or more for small segments; a limit the
	// buffer grows to as data waits, not memory taken). The kernel caps
	// the mark itself at half of net.ipv4.tcp_rmem's maximum.
	maxPauseLowat = 1 << 20
)

// pauseMark is the socket's receive low-water mark for a pause of d, when
// the reads since the previous pause began brought n bytes in el: twice
// what the pause brings at that rate, within [minPauseLowat,
// maxPauseLowat]. Reaching the mark ends the pause (waitMark), so it must
// hold for the whole pause at a steady rate (a mark of a fixed half read
// buffer was reached about 20 times a second at 100 msg/s, and a few
// hundred at 2,000); twice the expected bytes leaves room for a rate that
// doubles, and a flood after a quiet spell reaches it at once. The kernel
// still wakes the poller below the mark when its receive buffer or window
// runs short, and at the connection's end: the pause then goes on.
func pauseMark(n int64, el, d time.Duration) int {
	if n <= 0 || el <= 0 || d <= 0 {
		return minPauseLowat
	}
	m := 2 * float64(n) * float64(d) / float64(el)
	return int(min(max(m, minPauseLowat), maxPauseLowat))
}

// ask notes a request whose answer the client waits for (SUBSCRIBE, a QoS 1
// or 2 PUBLISH, PUBREL, PINGREQ): a read pause ends, or the next is not
// taken, so that the answer is read as soon as it comes.
func (c *bufConn) ask() {
	select {
	case c.asked <- struct{}{}:
	default:
	}
	c.interruptPause()
}

// writeDelay is how long written packets may wait to be sent together
// while their writer goes on writing. Every PUBACK is written on its own;
// the acks of a durable batch come within microseconds of each other, and
// one system call per batch instead of one per message saves a tenth of
// the agent's CPU at QoS 1.
const writeDelay = 200 * time.Microsecond

// bufConn is a connection whose reads go through a buffer and whose writes
// are gathered (see sender) and sent by one goroutine, which ends with
// Close. Write never blocks on the network: it returns the first error
// of an earlier send, and Close sends what is pending before it closes.
//
// Its deadlines are set on the network connection itself (under TLS or a
// websocket), which allows that during a write and makes a write in
// progress end: a websocket's own deadlines do neither, and only the
// sender touches them.
type bufConn struct {
	net.Conn
	raw net.Conn // the network connection under Conn (Conn itself for TCP)
	r   *bufio.Reader
	g   *gatherReader // under r

	mu      sync.Mutex
	pending []byte // written, not yet sent
	spare   []byte // the previous send's buffer, for reuse
	err     error  // first send error

	kick      chan struct{} // capacity 1: something is pending
	asked     chan struct{} // capacity 1: a request awaits its answer (ends a read pause)
	pauseT    *time.Timer   // the reader's pause timer (no waitMark); the reader's alone
	pmu       sync.Mutex    // orders pausing's changes and the read deadline they set
	pausing   atomic.Bool   // the reader is in waitMark (set under pmu)
	lowat     lowat         // the socket's receive low-water mark, raised during a pause
	markRead  int64         // g.read when the last pause began (see pauseMark)
	markAt    time.Time     // when it began, or the connection opened; the reader's alone
	done      chan struct{} // closed by Close
	ended     chan struct{} // closed when the sender has returned
	closeOnce sync.Once
	lastSend  time.Time // set by Close before done: the deadline of the last send
}

// Read reads from the buffer, refilling it from the connection.
func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// SetDeadline sets the network connection's read and write deadlines.
func (c *bufConn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

// SetReadDeadline sets the network connection's read deadline.
func (c *bufConn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the network connection's write deadline.
func (c *bufConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// Write queues p for the sender; after Close it fails with net.ErrClosed.
func (c *bufConn) Write(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// sender sends what is written: at once if the writer has stopped
// writing by the time the sender runs, else writeDelay later. A group of
// writes made in a loop (the PUBACKs of a batch) has usually ended by then:
// the sender, readied by the first write, waits for a processor, most
// often the writer's own once the writer is done. At low rates a timer
// there cost a thread's sleep and wake-up per group (the runtime's poller
// sleeps at least a millisecond) for nothing to gather.
func (c *bufConn) sender() {
	defer close(c.ended)
	t := time.NewTimer(writeDelay)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-c.kick:
		case <-c.done:
			c.sendLast()
			return
		}
		// A writer still at it on another processor grows pending
		// while the sender yields: gather for writeDelay, as it writes.
		n := c.pendingLen()
		runtime.Gosched()
		if c.pendingLen() != n {
			t.Reset(writeDelay)
			select {
			case <-t.C:
			case <-c.done:
				c.sendLast()
				return
			}
		}
		c.send()
	}
}

// pendingLen is how many bytes wait to be sent.
func (c *bufConn) pendingLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// sendLast sends what is pending at Close, by Close's deadline: set here
// on Conn too, since a websocket's frame writes replace the network
// connection's write deadline with their own.
func (c *bufConn) sendLast() {
	_ = c.Conn.SetWriteDeadline(c.lastSend)
	c.send()
}

// send writes the pending bytes to the connection.
func (c *bufConn) send() {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return
	}
	// buf is the sender's alone until it is handed back as spare.
	buf := c.pending
	c.pending, c.spare = c.spare[:0], nil
	c.mu.Unlock()
	_, err := c.Conn.Write(buf)
	c.mu.Lock()
	if cap(buf) <= 64<<10 { // keep a modest buffer, drop a huge one
		c.spare = buf[:0]
	}
	if err != nil && c.err == nil {
		c.err = fmt.Errorf("mqtt: send: %w", err)
	}
	c.mu.Unlock()
}

// Close sends what is pending (the DISCONNECT; within a second, a peer
// that does not read cannot hold it up), stops the sender and closes the
// connection. A second Close returns the connection's error, as net.Conn's
// does.
func (c *bufConn) Close() error {
	c.closeOnce.Do(func() {
		c.lastSend = time.Now().Add(time.Second)
		_ = c.raw.SetWriteDeadline(c.lastSend) // ends a send in progress to a stuck peer
		c.pmu.Lock()
		close(c.done)
		c.pmu.Unlock()
		c.interruptPause()
	})
	<-c.ended
	return c.Conn.Close()
}
