package mqttc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Client is the project's MQTT 3.1.1 client, shared by the MQTT source
// and sink: one connection at a time, read by one goroutine that hands
// every PUBLISH to Handlers.Message in order, and written through a
// bufConn that gathers the PUBACKs of a batch (or the PUBLISHes of a sink's
// batch) into one system call. It encodes its packets itself (encode.go)
// and decodes what it receives with readPacket.
//
// It replaces paho's client, which spent goroutine hand-offs, a session
// store lookup, a fmt.Sprintf and many allocations on every message (the
// source's README has the measurement). Here a message costs its packet's
// bytes, its topic string and its message value, and its PUBACK is four
// bytes appended to the write buffer.
//
// When a connection ends the client reconnects with a backoff that starts
// over only after a connection lived a keepalive (see backoff and
// stableMin), names why the connection ended (see lossCause), and logs a
// run of losses as one episode. Disconnect returns only after every
// goroutine of the client has ended, readers included.
type Client struct {
	cfg   Options
	h     Handlers
	now   func() time.Time
	sleep func(context.Context, time.Duration) bool

	mu      sync.Mutex
	cur     *session        // the current connection; nil while there is none
	stopped bool            // Disconnect was called
	bg      context.Context // ends with Disconnect: bounds reconnecting and Handlers.Message
	stop    context.CancelFunc
	loops   sync.WaitGroup // readers, pingers and the reconnect loop

	rmu sync.Mutex // guards bo and ep
	bo  backoff
	ep  episode

	vers *Versions // ProtocolAuto: the version each broker took
	vmu  sync.Mutex
	last byte // the version of the last connection; 0 before the first
}

// Versions remembers, under ProtocolAuto, the MQTT version each broker
// (by URL) took: a client probes a broker once, and so do the clients
// that share one through Options.Versions (the MQTT source makes a new
// client when it reconnects to have a batch redelivered). Its zero value
// is ready; it is safe for concurrent use.
type Versions struct {
	mu sync.Mutex
	m  map[string]byte
}

func (v *Versions) get(broker string) byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[broker]
}

// set records ver for broker and reports whether it is news.
func (v *Versions) set(broker string, ver byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]byte{}
	}
	old := v.m[broker]
	v.m[broker] = ver
	return old != ver
}

// Options configure a Client.
type Options struct {
	// Brokers are the broker URLs, tried in order: tcp:// and mqtt://
	// (through a proxy from the environment), ssl://, tls://, mqtts://,
	// ws:// and wss://.
	Brokers  []string
	ClientID string
	// ProtocolVersion is 4 (MQTT 3.1.1, the default when 0), 5 (MQTT 5:
	// Receive Maximum, user properties, message expiry, reason codes) or
	// ProtocolAuto.
	ProtocolVersion byte
	// NeedsV5, under ProtocolAuto, names what the user asked for that
	// needs MQTT 5 ("message_expiry"): a broker that refuses MQTT 5 then
	// fails the connect with a *NeedsV5Error instead of falling back.
	NeedsV5 string
	// Versions, under ProtocolAuto, is where the client keeps the version
	// each broker took; nil for one of its own.
	Versions *Versions
	// ReceiveMaximum (MQTT 5) is how many QoS 1 and 2 messages the broker
	// may send unacknowledged; 0 leaves MQTT's default, 65535. Under 3.1.1
	// the broker's own limit applies (mosquitto: 20).
	ReceiveMaximum uint16
	// Username and Password log in; when Username is empty, the broker
	// URL's user info is used.
	Username, Password string
	CleanSession       bool
	// KeepAlive is the MQTT keepalive; PINGREQs go out every half of it
	// while the connection is quiet.
	KeepAlive      time.Duration
	ConnectTimeout time.Duration // one connection attempt, CONNACK included
	MaxReconnect   time.Duration // the cap of the reconnect backoff
	// MaxPayload bounds a received PUBLISH's payload: a larger one is
	// acked, dropped and counted through Handlers.Oversize. 0 means
	// 256 MiB, MQTT's own maximum.
	MaxPayload int
	// ReadPace, when not 0, paces the reads of the socket while the client
	// keeps up with the broker: once the messages of a read that found
	// less than half a read buffer of data have been handed to
	// Handlers.Message, Handlers.Drained runs, and the next read waits
	// ReadPace (less if the client makes a request meanwhile), so that
	// what arrives meanwhile is read with one system call and handed on in
	// one run. A message then waits up to ReadPace longer in the socket. A
	// read that had to wait the pause or longer for its data is not
	// followed by a pause: messages that sparse would gather nothing.
	// Reads pause only under MQTT 5 over a bare TCP or a TLS connection
	// (over TLS the socket's reads are judged under crypto/tls, see
	// recordReader; not over a websocket: its Read returns one websocket
	// message, mosquitto sends each MQTT message in its own, and a pause
	// after each would let one through per pause), and while fewer than half of
	// ReceiveMaximum messages await our ack, and a pause is shortened so
	// that, at the rate of the last read's messages, it brings no more
	// than that half: a broker that withholds messages until earlier ones
	// are acked would otherwise wait out the rest of every pause (under
	// 3.1.1 its limit is unknown: mosquitto's is 20). The MQTT source sets
	// it (see sources/mqtt: max_read_pace and linger); the sink leaves it
	// 0.
	ReadPace time.Duration
	// ReadPaceBatch, when not 0, makes the pace adapt to the rate of
	// messages: a read then pauses about as long as ReadPaceBatch messages
	// take to arrive at the rate seen over the last few seconds, between
	// ReadPaceMin and ReadPace (see readPacer), instead of ReadPace
	// always. ReadPace is the pause until the rate is known.
	ReadPaceBatch int
	// ReadPaceMin is the shortest pause of an adaptive pace
	// (ReadPaceBatch).
	ReadPaceMin time.Duration
	Will        *Will       // nil for none
	TLS         *tls.Config // for the TLS schemes; nil for Go's defaults
	// Name prefixes the client's log lines: "mqtt source", "mqtt sink".
	Name string
	// Now and Sleep are the clock of the reconnect loop; nil means
	// time.Now and agent.Sleep (tests set them).
	Now   func() time.Time
	Sleep func(context.Context, time.Duration) bool
}

// Handlers are the client's calls into its user. They run on the
// client's goroutines; Message may block, which stops the client reading
// the socket, but must return once stop is closed (by Disconnect, which
// waits for it). A nil handler does nothing; a nil Message acks the
// message and drops it.
type Handlers struct {
	Message  func(m *Message, stop <-chan struct{})
	Oversize func() // a message over MaxPayload was acked and dropped
	// Drained, with Options.ReadPace, runs once Message has had every
	// message of a read that found less than half a read buffer of data,
	// before the client reads again: the next message comes from a read
	// that pauses first or waits for data.
	Drained   func()
	Connected func() // after every connection, the first included
	// Lost counts a connection that ended, with its cause (see lossCause:
	// the label of pspf_mqtt_connections_lost_total) and error.
	Lost func(cause string, err error)
	// Log is where the client logs its episodes of lost connections.
	Log *slog.Logger
}

// ProtocolAuto as Options.ProtocolVersion tries MQTT 5 first and falls
// back to 3.1.1 when the broker refuses the protocol version: a CONNACK
// with 3.1.1's return code 0x01 or MQTT 5's reason code 0x84, or a
// connection closed before any CONNACK or a 3.1.1 CONNACK accepting the
// MQTT 5 CONNECT, if a 3.1.1 CONNECT then succeeds.
// Any other refusal (credentials, authorisation), a network error or a
// timeout is the connect's error, without a retry under 3.1.1. The
// version a broker took is kept for the client's lifetime, reconnects
// included, and logged once at INFO; Version reports it.
const ProtocolAuto byte = 0xff

// NeedsV5Error fails a connect under ProtocolAuto to a broker that
// refuses MQTT 5 when Options.NeedsV5 names a feature that needs it. It
// is a setup refusal (RefusedSetup): retrying cannot cure it.
type NeedsV5Error struct {
	Feature string // Options.NeedsV5
	Refusal error  // how the broker refused MQTT 5
}

func (e *NeedsV5Error) Error() string {
	return fmt.Sprintf("the broker refused MQTT 5 (%v) and %s needs it: set protocol_version: 3.1.1 without it, or use a broker that speaks MQTT 5", e.Refusal, e.Feature)
}

func (e *NeedsV5Error) Unwrap() error { return e.Refusal }

// Version returns the MQTT version of the client's last connection: 4
// (3.1.1) or 5; 0 before the first.
func (c *Client) Version() byte {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	return c.last
}

// New returns a client; it starts nothing until Connect.
func New(o Options, h Handlers) *Client {
	if h.Log == nil {
		h.Log = slog.New(slog.DiscardHandler)
	}
	if h.Message == nil {
		h.Message = func(m *Message, _ <-chan struct{}) { m.Ack() }
	}
	if h.Oversize == nil {
		h.Oversize = func() {}
	}
	if h.Drained == nil {
		h.Drained = func() {}
	}
	if h.Connected == nil {
		h.Connected = func() {}
	}
	if h.Lost == nil {
		h.Lost = func(string, error) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = agent.Sleep
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 256 << 20
	}
	if o.Name == "" {
		o.Name = "mqtt"
	}
	if o.Versions == nil {
		o.Versions = new(Versions)
	}
	c := &Client{cfg: o, h: h, now: o.Now, sleep: o.Sleep, vers: o.Versions,
		bo: backoff{max: o.MaxReconnect}, ep: episode{log: h.Log, clientID: o.ClientID, name: o.Name}}
	c.bg, c.stop = context.WithCancel(context.Background())
	return c
}

// stableAfter is how long a connection must live for the reconnect
// backoff to start over: a keepalive, at least stableMin.
func (c *Client) stableAfter() time.Duration { return max(c.cfg.KeepAlive, stableMin) }

// session is one network connection and the requests waiting on it.
type session struct {
	c      *Client
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
	unacked     atomic.Int64  // QoS 1 and 2 messages received and handed on, not yet acked

	v5        bool
	keepAlive time.Duration // the client's, or the broker's Server Keep Alive (MQTT 5)
	// quota (MQTT 5) holds a token per QoS 1 or 2 publish of ours awaiting
	// its answer, at most the broker's Receive Maximum: a client that sends
	// more is disconnected (§4.9). nil under 3.1.1.
	quota     chan struct{}
	maxQoS    byte // the broker's Maximum QoS (MQTT 5), 2 if it set none
	maxPacket int  // the broker's Maximum Packet Size (MQTT 5); 0: MQTT's own
	noShared  bool // the broker has no shared subscriptions (MQTT 5)
	noWild    bool // nor wildcard subscriptions
}

// op is a request awaiting the broker's answer.
type op struct {
	done    chan error // capacity 1
	filters []string   // a SUBSCRIBE's filters, in the order sent
	quota   bool       // holds a token of session.quota
}

// Message is a received PUBLISH. Its payload is its own: the client
// does not reuse it.
type Message struct {
	s       *session
	topic   string
	payload []byte
	id      uint16
	qos     byte
	user    []UserProperty // MQTT 5
	expiry  int64          // MQTT 5: the message expiry interval left, seconds; -1 for none
}

// Topic returns the message's topic.
func (m *Message) Topic() string { return m.topic }

// Payload returns the message's payload.
func (m *Message) Payload() []byte { return m.payload }

// Qos returns the QoS the message was received with.
func (m *Message) Qos() byte { return m.qos }

// UserProperties returns the message's MQTT 5 user properties, in the
// order received; none under 3.1.1.
func (m *Message) UserProperties() []UserProperty { return m.user }

// Expiry returns what is left of the message's MQTT 5 message expiry
// interval, as the broker sent it; false when the message has none.
func (m *Message) Expiry() (time.Duration, bool) {
	return time.Duration(m.expiry) * time.Second, m.expiry >= 0
}

// UserProperty returns the value of the message's first user property
// named key.
func (m *Message) UserProperty(key string) (string, bool) {
	for _, u := range m.user {
		if u.Key == key {
			return u.Value, true
		}
	}
	return "", false
}

// Ack sends the PUBACK (QoS 1) or PUBREC (QoS 2) on the connection the
// message came on; it does nothing for QoS 0 or once that connection has
// ended (the broker sends the message again on the next one).
func (m *Message) Ack() {
	switch m.qos {
	case 1:
		m.s.unacked.Add(-1)
		m.s.writeID(pktPuback, m.id)
	case 2:
		m.s.unacked.Add(-1)
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
	// ErrNotConnected fails a request made while there is no connection.
	ErrNotConnected = errors.New("mqtt: not connected")
	errDisconnected = errors.New("mqtt: disconnected")
	// ErrConnEnded fails a request whose connection ended before its
	// answer.
	ErrConnEnded = errors.New("mqtt: connection ended")
)

// Connect connects to the first broker that answers. From then on the
// client reconnects by itself whenever the connection ends, until
// Disconnect; Handlers.Connected runs after every connection, this one
// included.
func (c *Client) Connect(ctx context.Context) (bool, error) {
	s, present, err := c.dial(ctx)
	if err != nil {
		return false, err
	}
	if !c.adopt(s) {
		return false, errDisconnected
	}
	c.h.Connected()
	return present, nil
}

// dial tries the brokers in order.
func (c *Client) dial(ctx context.Context) (*session, bool, error) {
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

// RefusedSetup reports whether err holds a CONNACK refusal that retrying
// the same config cannot cure: credentials, authorisation, client id or
// protocol version (a broker that is down or busy is an outage instead).
func RefusedSetup(err error) bool {
	var ne *NeedsV5Error
	if errors.As(err, &ne) {
		return true
	}
	var re *RefusedError
	return errors.As(err, &re) && re.Setup()
}

// dialOne connects to one broker with the configured version, or under
// ProtocolAuto with the version the broker took before, or MQTT 5 and
// then 3.1.1 if the broker refuses the version (see ProtocolAuto).
func (c *Client) dialOne(ctx context.Context, u *url.URL) (*session, bool, error) {
	ver := c.cfg.ProtocolVersion
	if ver != ProtocolAuto {
		return c.dialVersion(ctx, u, ver)
	}
	key := u.String()
	if ver = c.vers.get(key); ver != 0 {
		return c.dialVersion(ctx, u, ver)
	}
	s, present, err := c.dialVersion(ctx, u, 5)
	if err == nil {
		c.chose(key, u, 5, nil)
		return s, present, nil
	}
	refused, sure := versionRefused(err)
	if !refused || ctx.Err() != nil {
		return nil, false, err
	}
	if sure && c.cfg.NeedsV5 != "" {
		return nil, false, &NeedsV5Error{Feature: c.cfg.NeedsV5, Refusal: err}
	}
	s, present, err4 := c.dialVersion(ctx, u, 4)
	if err4 != nil {
		if sure {
			return nil, false, fmt.Errorf("%w; under 3.1.1: %w", err, err4)
		}
		return nil, false, err // closed without a CONNACK: not a refusal after all
	}
	if c.cfg.NeedsV5 != "" {
		// A DISCONNECT first: the broker drops the will, which would
		// announce the agent offline.
		_ = s.write([]byte{typeDisconnect << 4, 0})
		s.end(errDisconnected)
		return nil, false, &NeedsV5Error{Feature: c.cfg.NeedsV5, Refusal: err}
	}
	c.chose(key, u, 4, err)
	return s, present, nil
}

// versionRefused reports whether err, of an MQTT 5 connect, may be the
// broker refusing the protocol version, and whether it surely is: a
// CONNACK with 3.1.1's return code 0x01 or MQTT 5's 0x84 is; a
// connection closed before any CONNACK may be (some 3.1.1 brokers close
// it), and so may a 3.1.1 CONNACK that accepts the MQTT 5 CONNECT (a
// broker that does not check the level): those count only if 3.1.1 then
// succeeds.
func versionRefused(err error) (refused, sure bool) {
	var re *RefusedError
	if errors.As(err, &re) {
		v := re.V5 && re.Code == 0x84 || !re.V5 && re.Code == 1
		return v, v
	}
	if errors.Is(err, errConnack311) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return true, false
	}
	return false, false
}

// chose records the version broker u took under ProtocolAuto and logs it
// at INFO, once per broker for the client's lifetime (or its Versions').
func (c *Client) chose(key string, u *url.URL, ver byte, refusal error) {
	if !c.vers.set(key, ver) {
		return
	}
	if ver == 5 {
		c.h.Log.Info(c.cfg.Name+": protocol_version auto: the broker took MQTT 5", "broker", u.Redacted())
		return
	}
	c.h.Log.Info(c.cfg.Name+": protocol_version auto: the broker refused MQTT 5, using MQTT 3.1.1 with it from now on",
		"broker", u.Redacted(), "refusal", refusal.Error())
}

// dialVersion connects to one broker under MQTT version ver (4 or 5) and
// waits for its CONNACK.
func (c *Client) dialVersion(ctx context.Context, u *url.URL, ver byte) (*session, bool, error) {
	bc, err := openConn(u, c.cfg.TLS, c.cfg.ConnectTimeout)
	if err != nil {
		return nil, false, err
	}
	// The handshake ends by the connect timeout, or earlier with ctx.
	_ = bc.SetDeadline(time.Now().Add(c.cfg.ConnectTimeout))
	stop := context.AfterFunc(ctx, func() { _ = bc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	user, pass := c.cfg.Username, c.cfg.Password
	if user == "" && u.User != nil {
		// As paho does: the URL's credentials when the config has none.
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	o := c.cfg
	o.ProtocolVersion = ver
	if _, err := bc.Write(connectPacket(&o, user, pass)); err != nil {
		bc.Close()
		return nil, false, err
	}
	v5 := ver == 5
	limit := 2
	if v5 {
		limit = 64 << 10 // properties: reason string, user properties
	}
	typ, _, n, body, err := readPacket(bc.r, limit)
	var cp props
	if err == nil {
		cp, err = checkConnack(typ, n, body, v5)
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
	s := &session{c: c, bc: bc, broker: u.String(), ops: map[uint16]*op{}, dead: make(chan struct{}),
		v5: v5, keepAlive: c.cfg.KeepAlive, maxQoS: 2}
	if v5 {
		quota := int(cp.receiveMax)
		if quota == 0 {
			quota = 65535 // not set (§3.2.2.3.3)
		}
		s.quota = make(chan struct{}, quota)
		if cp.hasServerKeep {
			s.keepAlive = time.Duration(cp.serverKeep) * time.Second
		}
		if cp.hasMaxQoS {
			s.maxQoS = cp.maxQoS
		}
		s.noShared, s.noWild = cp.sharedSubsOff, cp.wildcardSubOff
		s.maxPacket = int(min(cp.maxPacket, 1<<28+4)) // 0: not set
	}
	return s, body[0]&1 == 1, nil
}

// adopt makes s the current connection and starts its reader and pinger;
// after Disconnect it closes s instead and reports false.
func (c *Client) adopt(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		s.end(errDisconnected)
		return false
	}
	c.cur = s
	s.start = c.now()
	c.vmu.Lock()
	c.last = 4
	if s.v5 {
		c.last = 5
	}
	c.vmu.Unlock()
	c.loops.Add(2)
	go func() {
		defer c.loops.Done()
		s.ping()
	}()
	// The reader may wait inside Handlers.Message: Disconnect ends that
	// wait (bg) before it waits for the reader.
	go func() {
		defer c.loops.Done()
		s.read()
	}()
	return true
}

func (c *Client) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// lost is called once when s ends without Disconnect: it reconnects in the
// background.
func (c *Client) lost(s *session, err error) {
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
func (c *Client) stable() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.bo.reset()
	c.ep.onStable(c.now())
}

// report counts and logs a connection lost at at.
func (c *Client) report(at time.Time, cause string, err error, lived time.Duration) {
	c.h.Lost(cause, err)
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
func (c *Client) reconnect(old *session, err error, at time.Time) {
	lived := at.Sub(old.start)
	if lived >= c.stableAfter() {
		c.stable()
	}
	cause := lossCause(err)
	silent := silentClose(err)
	if !silent {
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
		if first && silent {
			if derr == nil && s.broker == old.broker {
				c.report(at, causeTakeover, takeover(c.cfg.ClientID), lived)
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
		c.h.Connected()
		return
	}
}

// Subscribe sends one SUBSCRIBE with every filter and waits for its SUBACK.
func (c *Client) Subscribe(ctx context.Context, filters map[string]byte) error {
	s := c.current()
	if s == nil {
		return ErrNotConnected
	}
	topics := make([]string, 0, len(filters))
	for f := range filters {
		topics = append(topics, f)
	}
	slices.Sort(topics)
	qos := make([]byte, len(topics))
	for i, f := range topics {
		qos[i] = filters[f]
	}
	for _, f := range topics {
		if s.noShared && strings.HasPrefix(f, "$share/") {
			return fmt.Errorf("mqtt: subscription %q: the broker has no shared subscriptions (CONNACK)", f)
		}
		if s.noWild && strings.ContainsAny(f, "+#") {
			return fmt.Errorf("mqtt: subscription %q: the broker has no wildcard subscriptions (CONNACK)", f)
		}
	}
	return s.request(ctx, func(id uint16) []byte { return subscribePacket(s.v5, id, topics, qos) }, &op{filters: topics})
}

// Publish sends a message; with QoS 1 or 2 it waits for the broker's ack.
func (c *Client) Publish(ctx context.Context, topic string, qos byte, retain bool, payload []byte) error {
	ack, err := c.PublishAsync(ctx, &Publication{Topic: topic, QoS: qos, Retain: retain, Payload: payload})
	if err != nil {
		return err
	}
	select {
	case err := <-ack:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync queues a message on the current connection: the channel
// receives nil at the PUBACK (QoS 1) or PUBCOMP (QoS 2), a *ReasonError
// if the broker refused it (MQTT 5), or the error that ended the
// connection first; for QoS 0 it holds nil already. A message over the
// broker's Maximum Packet Size is not sent: the error is a *TooLargeError. The message is copied:
// the caller may reuse it once PublishAsync returns. Messages are sent in
// the order queued. Under MQTT 5 it waits, up to ctx, while the broker's
// Receive Maximum of our QoS 1 and 2 messages await their answer. A caller
// that stops waiting leaves the answer in the channel (capacity 1).
func (c *Client) PublishAsync(ctx context.Context, p *Publication) (<-chan error, error) {
	s := c.current()
	if s == nil {
		return nil, ErrNotConnected
	}
	if p.QoS > s.maxQoS {
		return nil, fmt.Errorf("mqtt: publish QoS %d: the broker allows at most QoS %d (CONNACK)", p.QoS, s.maxQoS)
	}
	if n := publishLen(s.v5, p); s.maxPacket > 0 && n > s.maxPacket {
		// The broker would close the connection on it (§3.2.2.3.6).
		return nil, &TooLargeError{Topic: p.Topic, Size: n, Max: s.maxPacket}
	}
	if p.QoS == 0 {
		done := make(chan error, 1)
		done <- nil
		return done, s.write(publishPacket(s.v5, p, 0))
	}
	o := &op{done: make(chan error, 1)}
	if s.quota != nil {
		select {
		case s.quota <- struct{}{}:
			o.quota = true
		case <-s.dead:
			return nil, fmt.Errorf("%w: %w", ErrConnEnded, s.err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if _, err := s.send(func(id uint16) []byte { return publishPacket(s.v5, p, id) }, o); err != nil {
		return nil, err
	}
	return o.done, nil
}

// Connected reports whether the client has a connection now (it may end
// at any time; a request then fails with ErrConnEnded).
func (c *Client) Connected() bool { return c.current() != nil }

// Disconnect sends DISCONNECT, closes the connection (what is pending is
// sent first), stops reconnecting, and returns once every goroutine of the
// client has ended: a reader waiting in Handlers.Message is released
// through the stop channel the handler was given. Unacked messages stay
// with the broker. Nothing else is in progress to wait for, so quiesce is
// not needed.
func (c *Client) Disconnect(time.Duration) {
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
		_ = s.write([]byte{typeDisconnect << 4, 0})
		s.end(errDisconnected)
	}
	c.loops.Wait()
}

// request sends the packet that encode makes with a fresh packet id and
// waits for its answer.
func (s *session) request(ctx context.Context, encode func(id uint16) []byte, o *op) error {
	o.done = make(chan error, 1)
	id, err := s.send(encode, o)
	if err != nil {
		return err
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		s.finish(id, nil)
		return ctx.Err()
	}
}

// errNoPacketID fails a request while every packet id is in use.
var errNoPacketID = errors.New("mqtt: 65535 requests awaiting an answer, no packet id free")

// send registers o under a fresh packet id and queues the packet that
// encode makes with it; o.done receives the answer.
func (s *session) send(encode func(id uint16) []byte, o *op) (uint16, error) {
	s.mu.Lock()
	if s.ops == nil || len(s.ops) >= 65535 {
		err := errNoPacketID
		if s.ops == nil {
			err = fmt.Errorf("%w: %w", ErrConnEnded, s.err)
		}
		s.mu.Unlock()
		if o.quota {
			<-s.quota
		}
		return 0, err
	}
	id := s.freeIDLocked()
	s.ops[id] = o
	s.mu.Unlock()
	s.bc.ask()
	if err := s.write(encode(id)); err != nil {
		s.finish(id, nil)
		return 0, fmt.Errorf("%w: %w", ErrConnEnded, err)
	}
	return id, nil
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
		if o.quota {
			<-s.quota
		}
		o.done <- err
	}
}

// suback ends a SUBSCRIBE, failing it for every filter the broker refused
// (return code 0x80; under MQTT 5 any reason code from 0x80, named).
func (s *session) suback(id uint16, codes []byte, reason string) {
	s.mu.Lock()
	o := s.ops[id]
	s.mu.Unlock()
	if o == nil {
		return
	}
	var errs []error
	for i, code := range codes {
		if code < 0x80 || i >= len(o.filters) {
			continue
		}
		if s.v5 {
			errs = append(errs, &ReasonError{Packet: "SUBACK", Code: code, Reason: reason, Filter: o.filters[i]})
		} else {
			errs = append(errs, fmt.Errorf("broker refused subscription %q", o.filters[i]))
		}
	}
	if len(codes) != len(o.filters) {
		errs = append(errs, fmt.Errorf("mqtt: SUBACK has %d return codes for %d filters", len(codes), len(o.filters)))
	}
	s.finish(id, errors.Join(errs...))
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
			o.done <- fmt.Errorf("%w: %w", ErrConnEnded, err)
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
// through Handlers.Oversize; one whose packet is longer than any PUBLISH
// within max_payload can be is skipped on the socket, never read into memory.
// It ends with errBrokerClosed when the broker closes the connection
// between packets, and with a protocolError on a packet that breaks MQTT.
func (s *session) readLoop() error {
	maxPayload := s.c.cfg.MaxPayload
	limit := 2 + 65535 + 2 + maxPayload // the longest topic, an id, the payload
	stop := s.c.bg.Done()
	pacer := newReadPacer(s.c.cfg.ReadPaceBatch, s.c.cfg.ReadPaceMin, s.c.cfg.ReadPace)
	// Under 3.1.1 the broker's in-flight limit is unknown, and over a
	// websocket a small read does not mean the socket is drained (see
	// ReadPace).
	paced := s.c.cfg.ReadPace > 0 && s.v5 && s.bc.stream()
	paceMax := int64(65535) // while fewer await our ack, reads may pause
	if rm := s.c.cfg.ReceiveMaximum; rm > 0 {
		paceMax = int64(rm)
	}
	paceMax = max(paceMax/2, 1)
	var burst int64     // messages handed on since the last drain
	var lastDrain int64 // when that was, unix nanoseconds; 0: not yet
	for {
		if paced && s.bc.drained() {
			s.c.h.Drained()
			now := time.Now().UnixNano()
			if lastDrain != 0 {
				pacer.observe(burst, time.Duration(now-lastDrain))
			}
			if pace := pacer.pace(); !s.bc.sparse(pace) {
				if d := pauseFor(pace, paceMax-s.unacked.Load(), burst, now-lastDrain, lastDrain != 0); d > 0 {
					s.bc.pause(d)
				}
			}
			burst, lastDrain = 0, now
		}
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
			if typ != typePublish {
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
		case typePublish:
			topic, id, payload, qos, pp, err := parsePublish(flags, body, s.v5)
			if err != nil {
				return err
			}
			if len(payload) > maxPayload {
				s.dropOversize(id, qos)
				continue
			}
			m := &Message{s: s, topic: topic, payload: payload, id: id, qos: qos, user: pp.user, expiry: -1}
			if qos > 0 {
				s.unacked.Add(1)
			}
			if pp.hasExpiry {
				m.expiry = int64(pp.expiry)
			}
			burst++
			s.c.h.Message(m, stop)
			continue
		}
		if err := checkPacket(typ, flags, body, s.v5); err != nil {
			return err
		}
		if typ == typeDisconnect { // MQTT 5: the broker says why
			code, reason, err := parseDisconnect(body)
			if err != nil {
				return err
			}
			return &ReasonError{Packet: "DISCONNECT", Code: code, Reason: reason}
		}
		if typ == typePingresp {
			continue
		}
		id := uint16(body[0])<<8 | uint16(body[1])
		code, reason, err := parseAck(typ, body, s.v5)
		if err != nil {
			return err
		}
		var failed error
		if code >= 0x80 && typ != typeSuback {
			failed = &ReasonError{Packet: packetName(typ), Code: code, Reason: reason}
		}
		switch typ {
		case typePuback, typePubcomp:
			s.finish(id, failed)
		case typePubrec: // our QoS 2 publish: release it, unless refused
			if failed != nil {
				s.finish(id, failed)
				continue
			}
			s.bc.ask()
			s.writeID(pktPubrel, id)
		case typePubrel: // a QoS 2 message we PUBRECed: complete it
			s.writeID(pktPubcomp, id)
		case typeSuback:
			codes, reason, err := subackCodes(body, s.v5)
			if err != nil {
				return err
			}
			s.suback(id, codes, reason)
		}
	}
}

// dropOversize acks and counts a PUBLISH over max_payload.
func (s *session) dropOversize(id uint16, qos byte) {
	s.c.h.Oversize()
	(&Message{s: s, id: id, qos: qos}).Ack()
}

// ping keeps the connection alive: every half keepalive in which nothing
// was sent or nothing was received, it sends a PINGREQ; when nothing at all
// has been received for a keepalive after one, the connection is taken for
// dead and ended. (Anything received counts: a PINGRESP queues behind every
// message the broker has for us.) It also tells the client when the
// connection has lived long enough to count as stable.
func (s *session) ping() {
	tick := max(s.keepAlive/2, 100*time.Millisecond)
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
				} else if now.Sub(pingAt) >= s.keepAlive {
					s.end(fmt.Errorf("%w: nothing received for %s after a PINGREQ", errKeepalive, now.Sub(pingAt).Round(time.Second)))
					return
				}
			}
			if pingAt.IsZero() && (nsent == sent || nrecvd == recvd) {
				s.bc.ask()
				if s.write([]byte{typePingreq << 4, 0}) == nil {
					pingAt, pingRecvd = now, nrecvd
				}
				nsent = s.sent.Load()
			}
			sent, recvd = nsent, nrecvd
		}
	}
}
