package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/agent"
)

// client is the source's MQTT 3.1.1 client: one connection at a time, read
// by one goroutine that hands every PUBLISH to handlers.message in order,
// and written through a bufConn that gathers the PUBACKs of a batch into one
// system call. It encodes its own requests with paho's packets package and
// decodes what it receives with readPacket.
//
// It replaces paho's client on the receive path, which spent goroutine
// hand-offs, a session store lookup, a fmt.Sprintf and many allocations on
// every message (the README has the measurement). Here a message costs its
// packet's bytes, its topic string and its message value, and its PUBACK is
// four bytes appended to the write buffer.
//
// When a connection ends the client reconnects with a backoff that starts
// over only after a connection lived a keepalive (see backoff and
// stableMin), names why the connection ended (see lossCause), and logs a
// run of losses as one episode. Disconnect returns only after every
// goroutine of the client has ended, readers included.
type client struct {
	cfg      *Config
	clientID string
	tls      *tls.Config
	h        handlers
	now      func() time.Time                          // time.Now; tests set it
	sleep    func(context.Context, time.Duration) bool // agent.Sleep; tests set it

	mu      sync.Mutex
	cur     *session        // the current connection; nil while there is none
	stopped bool            // Disconnect was called
	bg      context.Context // ends with Disconnect: bounds reconnecting and handlers.message
	stop    context.CancelFunc
	loops   sync.WaitGroup // readers, pingers and the reconnect loop

	rmu sync.Mutex // guards bo and ep
	bo  backoff
	ep  episode
}

func dialClient(cfg *Config, clientID string, tlsCfg *tls.Config, h handlers) broker {
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	c := &client{cfg: cfg, clientID: clientID, tls: tlsCfg, h: h, now: time.Now, sleep: agent.Sleep,
		bo: backoff{max: cfg.MaxReconnect}, ep: episode{log: h.log, clientID: clientID}}
	c.bg, c.stop = context.WithCancel(context.Background())
	return c
}

// stableAfter is how long a connection must live for the reconnect
// backoff to start over: a keepalive, at least stableMin.
func (c *client) stableAfter() time.Duration { return max(c.cfg.KeepAlive, stableMin) }

// session is one network connection and the requests waiting on it.
type session struct {
	c      *client
	bc     *bufConn
	broker string // the broker's URL

	mu     sync.Mutex
	ops    map[uint16]*op // our SUBSCRIBEs and QoS ≥ 1 PUBLISHes awaiting their ack
	nextID uint16

	dead    chan struct{} // closed by end
	endOnce sync.Once
	err     error     // why it ended; set before dead is closed
	start   time.Time // when it was adopted, on the client's clock

	sent, recvd atomic.Uint64 // packets, for the keepalive
}

// op is a request awaiting the broker's answer.
type op struct {
	done    chan error // capacity 1
	filters []string   // a SUBSCRIBE's filters, in the order sent
}

// inMsg is a received PUBLISH.
type inMsg struct {
	s       *session
	topic   string
	payload []byte
	id      uint16
	qos     byte
}

func (m *inMsg) Topic() string   { return m.topic }
func (m *inMsg) Payload() []byte { return m.payload }
func (m *inMsg) Qos() byte       { return m.qos }

// Ack sends the PUBACK (QoS 1) or PUBREC (QoS 2) on the connection the
// message came on; it does nothing for QoS 0 or once that connection has
// ended (the broker sends the message again on the next one).
func (m *inMsg) Ack() {
	switch m.qos {
	case 1:
		m.s.writeID(pktPuback, m.id)
	case 2:
		m.s.writeID(pktPubrec, m.id)
	}
}

// Control packet first bytes (type and flags) of the packets sent by id.
const (
	pktPuback  = 0x40
	pktPubrec  = 0x50
	pktPubrel  = 0x62 // PUBREL has flags 0010
	pktPubcomp = 0x70
)

var (
	errNotConnected = errors.New("mqtt: not connected")
	errDisconnected = errors.New("mqtt: disconnected")
	// errConnEnded fails a request whose connection ended before its answer.
	errConnEnded = errors.New("mqtt: connection ended")
)

// Connect connects to the first broker that answers. From then on the
// client reconnects by itself whenever the connection ends, until
// Disconnect; handlers.connected runs after every connection, this one
// included.
func (c *client) Connect(ctx context.Context) (bool, error) {
	s, present, err := c.dial(ctx)
	if err != nil {
		return false, err
	}
	if !c.adopt(s) {
		return false, errDisconnected
	}
	c.h.connected()
	return present, nil
}

// dial tries the brokers in order.
func (c *client) dial(ctx context.Context) (*session, bool, error) {
	var errs []error
	for _, b := range c.cfg.Brokers {
		u, err := url.Parse(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("mqtt: broker %q: %w", b, err))
			continue
		}
		s, present, err := c.dialOne(ctx, u)
		if err == nil {
			return s, present, nil
		}
		errs = append(errs, fmt.Errorf("mqtt: %s: %w", u.Redacted(), err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, false, errors.Join(errs...)
}

// refusedSetup reports whether err holds a CONNACK refusal that retrying
// the same config cannot cure: credentials, authorisation, client id or
// protocol version (a broker that is down or busy is an outage instead).
func refusedSetup(err error) bool {
	for _, e := range []error{packets.ErrorRefusedBadUsernameOrPassword, packets.ErrorRefusedNotAuthorised,
		packets.ErrorRefusedIDRejected, packets.ErrorRefusedBadProtocolVersion} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// dialOne connects to one broker and waits for its CONNACK.
func (c *client) dialOne(ctx context.Context, u *url.URL) (*session, bool, error) {
	bc, err := openConn(u, c.tls, c.cfg.ConnectTimeout)
	if err != nil {
		return nil, false, err
	}
	// The handshake ends by the connect timeout, or earlier with ctx.
	_ = bc.SetDeadline(time.Now().Add(c.cfg.ConnectTimeout))
	stop := context.AfterFunc(ctx, func() { _ = bc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession = c.cfg.CleanSession
	cp.Keepalive = uint16(min(c.cfg.KeepAlive/time.Second, 65535))
	cp.ClientIdentifier = c.clientID
	if st := c.cfg.Status; st.Topic != "" {
		cp.WillFlag, cp.WillTopic, cp.WillMessage = true, st.Topic, []byte(st.Offline)
		cp.WillQos, cp.WillRetain = byte(st.QoS), st.Retain
	}
	user, pass := c.cfg.Username, c.cfg.Password
	if user == "" && u.User != nil {
		// As paho (the sink) does: the URL's credentials when the config
		// has none. They were ignored before, a login silently anonymous.
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if user != "" {
		cp.UsernameFlag, cp.Username = true, user
	}
	if pass != "" {
		cp.PasswordFlag, cp.Password = true, []byte(pass)
	}
	var buf bytes.Buffer
	_ = cp.Write(&buf) // a bytes.Buffer does not fail
	if _, err := bc.Write(buf.Bytes()); err != nil {
		bc.Close()
		return nil, false, err
	}
	typ, _, n, body, err := readPacket(bc.r, 2)
	if err == nil && (typ != packets.Connack || len(body) != 2) {
		err = fmt.Errorf("expected CONNACK, got packet type %d of %d bytes", typ, n)
	}
	if err == nil && body[1] != packets.Accepted {
		err = packets.ConnErrors[body[1]]
		if err == nil {
			err = fmt.Errorf("refused with return code %d", body[1])
		}
		err = fmt.Errorf("connection refused: %w", err)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		bc.Close()
		return nil, false, err
	}
	if !stop() { // ctx ended just now: the deadline may be in the past
		bc.Close()
		return nil, false, ctx.Err()
	}
	_ = bc.SetDeadline(time.Time{})
	s := &session{c: c, bc: bc, broker: u.String(), ops: map[uint16]*op{}, dead: make(chan struct{})}
	return s, body[0]&1 == 1, nil
}

// adopt makes s the current connection and starts its reader and pinger;
// after Disconnect it closes s instead and reports false.
func (c *client) adopt(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		s.end(errDisconnected)
		return false
	}
	c.cur = s
	s.start = c.now()
	c.loops.Add(2)
	go func() {
		defer c.loops.Done()
		s.ping()
	}()
	// The reader may wait inside handlers.message: Disconnect ends that
	// wait (bg) before it waits for the reader.
	go func() {
		defer c.loops.Done()
		s.read()
	}()
	return true
}

func (c *client) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// lost is called once when s ends without Disconnect: it reconnects in the
// background.
func (c *client) lost(s *session, err error) {
	c.mu.Lock()
	if c.cur != s || c.stopped {
		c.mu.Unlock()
		return
	}
	c.cur = nil
	c.loops.Add(1)
	c.mu.Unlock()
	at := c.now()
	go func() {
		defer c.loops.Done()
		c.reconnect(s, err, at)
	}()
}

// stable is called once a connection has lived stableAfter: the backoff
// starts over and the episode of losses, if any, ends.
func (c *client) stable() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.bo.reset()
	c.ep.onStable(c.now())
}

// report counts and logs a connection lost at at.
func (c *client) report(at time.Time, cause string, err error, lived time.Duration) {
	c.h.lost(cause, err)
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.ep.onLost(at, cause, err, lived)
}

// reconnect reports the loss of old, ended by err at at, and connects
// again, waiting the backoff before every attempt, until it succeeds or
// Disconnect is called. A connection the broker closed without a word is
// reported once the first attempt tells a takeover (the same broker
// accepted it) from a broker going away (it failed, or another broker of
// the list answered).
func (c *client) reconnect(old *session, err error, at time.Time) {
	lived := at.Sub(old.start)
	if lived >= c.stableAfter() {
		c.stable()
	}
	cause := lossCause(err)
	if cause != causeClosed {
		c.report(at, cause, err, lived)
	}
	for first := true; ; first = false {
		c.rmu.Lock()
		wait := c.bo.next()
		c.rmu.Unlock()
		if !c.sleep(c.bg, wait) || c.bg.Err() != nil {
			return
		}
		s, _, derr := c.dial(c.bg)
		if first && cause == causeClosed {
			if derr == nil && s.broker == old.broker {
				c.report(at, causeTakeover, takeover(c.clientID), lived)
			} else if c.bg.Err() == nil {
				c.report(at, causeClosed, err, lived)
			}
		}
		if derr != nil {
			if c.bg.Err() != nil {
				return
			}
			c.rmu.Lock()
			c.ep.onFailed(c.now(), derr)
			c.rmu.Unlock()
			continue
		}
		if !c.adopt(s) {
			return
		}
		c.rmu.Lock()
		c.ep.onReconnected(c.now())
		c.rmu.Unlock()
		c.h.connected()
		return
	}
}

// Subscribe sends one SUBSCRIBE with every filter and waits for its SUBACK.
func (c *client) Subscribe(ctx context.Context, filters map[string]byte) error {
	s := c.current()
	if s == nil {
		return errNotConnected
	}
	p := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	for f := range filters {
		p.Topics = append(p.Topics, f)
	}
	slices.Sort(p.Topics)
	for _, f := range p.Topics {
		p.Qoss = append(p.Qoss, filters[f])
	}
	return s.request(ctx, p, &op{filters: p.Topics})
}

// Publish sends a message; with QoS 1 or 2 it waits for the broker's ack.
func (c *client) Publish(ctx context.Context, topic string, qos byte, retain bool, payload []byte) error {
	s := c.current()
	if s == nil {
		return errNotConnected
	}
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.Retain, p.Payload = topic, qos, retain, payload
	if qos == 0 {
		return s.writePacket(p)
	}
	return s.request(ctx, p, &op{})
}

// Disconnect sends DISCONNECT, closes the connection (what is pending is
// sent first), stops reconnecting, and returns once every goroutine of the
// client has ended: a reader waiting in handlers.message is released
// through the stop channel the handler was given. Unacked messages stay
// with the broker. Nothing else is in progress to wait for, so quiesce is
// not needed.
func (c *client) Disconnect(time.Duration) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		c.loops.Wait()
		return
	}
	c.stopped = true
	c.stop()
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	if s != nil {
		_ = s.write([]byte{packets.Disconnect << 4, 0})
		s.end(errDisconnected)
	}
	c.loops.Wait()
}

// request sends p with a fresh packet id and waits for its answer.
func (s *session) request(ctx context.Context, p packets.ControlPacket, o *op) error {
	o.done = make(chan error, 1)
	s.mu.Lock()
	if s.ops == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", errConnEnded, s.err)
	}
	id := s.freeIDLocked()
	s.ops[id] = o
	s.mu.Unlock()
	switch p := p.(type) {
	case *packets.PublishPacket:
		p.MessageID = id
	case *packets.SubscribePacket:
		p.MessageID = id
	}
	if err := s.writePacket(p); err != nil {
		s.finish(id, nil)
		return fmt.Errorf("%w: %w", errConnEnded, err)
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		s.finish(id, nil)
		return ctx.Err()
	}
}

// freeIDLocked returns a packet id no request of ours is using.
func (s *session) freeIDLocked() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.ops[s.nextID]; !used {
			return s.nextID
		}
	}
}

// finish ends the request with id, if still waiting, with err.
func (s *session) finish(id uint16, err error) {
	s.mu.Lock()
	o := s.ops[id]
	delete(s.ops, id)
	s.mu.Unlock()
	if o != nil {
		o.done <- err
	}
}

// suback ends a SUBSCRIBE, failing it for every filter the broker refused.
func (s *session) suback(id uint16, codes []byte) {
	s.mu.Lock()
	o := s.ops[id]
	s.mu.Unlock()
	if o == nil {
		return
	}
	var errs []error
	for i, code := range codes {
		if code == 0x80 && i < len(o.filters) {
			errs = append(errs, fmt.Errorf("broker refused subscription %q", o.filters[i]))
		}
	}
	if len(codes) != len(o.filters) {
		errs = append(errs, fmt.Errorf("mqtt: SUBACK has %d return codes for %d filters", len(codes), len(o.filters)))
	}
	s.finish(id, errors.Join(errs...))
}

// writePacket encodes p and queues it in one write.
func (s *session) writePacket(p packets.ControlPacket) error {
	var buf bytes.Buffer
	_ = p.Write(&buf) // a bytes.Buffer does not fail
	return s.write(buf.Bytes())
}

// writeID queues a four-byte packet that carries only a packet id.
func (s *session) writeID(first byte, id uint16) {
	// An error means the connection has ended: the broker resends.
	_ = s.write([]byte{first, 2, byte(id >> 8), byte(id)})
}

// write queues p; the bufConn sends it within writeDelay.
func (s *session) write(p []byte) error {
	if _, err := s.bc.Write(p); err != nil {
		return err
	}
	s.sent.Add(1)
	return nil
}

// end closes the connection and fails the requests still waiting; the
// first call's err is the one kept.
func (s *session) end(err error) {
	s.endOnce.Do(func() {
		s.bc.Close()
		s.mu.Lock()
		s.err = err
		ops := s.ops
		s.ops = nil
		s.mu.Unlock()
		for _, o := range ops {
			o.done <- fmt.Errorf("%w: %w", errConnEnded, err)
		}
		close(s.dead)
	})
}

// read reads packets until the connection ends, then has the client
// reconnect unless Disconnect ended it.
func (s *session) read() {
	s.end(s.readLoop())
	s.c.lost(s, s.err) // the first reason: a keepalive failure closes the connection too
}

// readLoop reads packets and answers them. A PUBLISH over max_payload is
// dropped and acked (or the broker would send it forever) and counted
// through handlers.oversize; one whose packet is longer than any PUBLISH
// within max_payload can be is skipped on the socket, never read into memory.
// It ends with errBrokerClosed when the broker closes the connection
// between packets, and with a protocolError on a packet that breaks MQTT.
func (s *session) readLoop() error {
	maxPayload := int(s.c.cfg.MaxPayload)
	limit := 2 + 65535 + 2 + maxPayload // the longest topic, an id, the payload
	stop := s.c.bg.Done()
	for {
		typ, flags, n, body, err := readPacket(s.bc.r, limit)
		var pe *protocolError
		switch {
		case err == io.EOF:
			return errBrokerClosed
		case errors.As(err, &pe):
			return err
		case err != nil:
			return fmt.Errorf("mqtt: read: %w", err)
		}
		s.recvd.Add(1)
		if n > limit {
			if typ != packets.Publish {
				return violation("%s of %d bytes", packetName(typ), n)
			}
			id, qos, err := skipPublish(s.bc.r, flags, n)
			if err != nil {
				return err
			}
			s.dropOversize(id, qos)
			continue
		}
		switch typ {
		case packets.Publish:
			topic, id, payload, qos, err := parsePublish(flags, body)
			if err != nil {
				return err
			}
			if len(payload) > maxPayload {
				s.dropOversize(id, qos)
				continue
			}
			s.c.h.message(&inMsg{s: s, topic: topic, payload: payload, id: id, qos: qos}, stop)
			continue
		}
		if err := checkPacket(typ, flags, body); err != nil {
			return err
		}
		switch typ {
		case packets.Puback, packets.Pubcomp, packets.Pubrec, packets.Pubrel, packets.Suback:
			id := uint16(body[0])<<8 | uint16(body[1])
			switch typ {
			case packets.Puback, packets.Pubcomp:
				s.finish(id, nil)
			case packets.Pubrec: // our QoS 2 publish: release it
				s.writeID(pktPubrel, id)
			case packets.Pubrel: // a QoS 2 message we PUBRECed: complete it
				s.writeID(pktPubcomp, id)
			case packets.Suback:
				s.suback(id, body[2:])
			}
		}
	}
}

// dropOversize acks and counts a PUBLISH over max_payload.
func (s *session) dropOversize(id uint16, qos byte) {
	s.c.h.oversize()
	(&inMsg{s: s, id: id, qos: qos}).Ack()
}

// ping keeps the connection alive: every half keepalive in which nothing
// was sent or nothing was received, it sends a PINGREQ; when nothing at all
// has been received for a keepalive after one, the connection is taken for
// dead and ended. (Anything received counts: a PINGRESP queues behind every
// message the broker has for us.) It also tells the client when the
// connection has lived long enough to count as stable.
func (s *session) ping() {
	tick := max(s.c.cfg.KeepAlive/2, 100*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	sent, recvd := s.sent.Load(), s.recvd.Load()
	var pingAt time.Time // when the outstanding PINGREQ went out
	var pingRecvd uint64 // recvd then
	stable := false
	for {
		select {
		case <-s.dead:
			return
		case now := <-t.C:
			if !stable && s.c.now().Sub(s.start) >= s.c.stableAfter() {
				stable = true
				s.c.stable()
			}
			nsent, nrecvd := s.sent.Load(), s.recvd.Load()
			if !pingAt.IsZero() {
				if nrecvd != pingRecvd {
					pingAt = time.Time{}
				} else if now.Sub(pingAt) >= s.c.cfg.KeepAlive {
					s.end(fmt.Errorf("%w: nothing received for %s after a PINGREQ", errKeepalive, now.Sub(pingAt).Round(time.Second)))
					return
				}
			}
			if pingAt.IsZero() && (nsent == sent || nrecvd == recvd) {
				if s.write([]byte{packets.Pingreq << 4, 0}) == nil {
					pingAt, pingRecvd = now, nrecvd
				}
				nsent = s.sent.Load()
			}
			sent, recvd = nsent, nrecvd
		}
	}
}

var _ broker = (*client)(nil)
