// Package mqtt is a sink that publishes records to an upstream MQTT broker
// (a cloud IoT endpoint) with the project's own MQTT client (internal/mqttc,
// the MQTT source's too). With QoS 1 a batch is delivered only once the
// broker has answered every message of it with a PUBACK; under MQTT 5 a
// message it refuses for good goes to the dead letters with its reason
// code.
package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/mqttc"
)

// Config is the MQTT sink's config.
type Config struct {
	Broker         string        `yaml:"broker" doc:"broker URL: tcp://host:1883, ssl://host:8883, ws:// or wss://"`
	Topic          string        `yaml:"topic" required:"true" doc:"topic, or a template over record fields like sites/{site}/telemetry; {_key} and {_source} name the record's key and source"`
	QoS            int           `yaml:"qos" doc:"0 (at most once: the cursor moves once the message is written to the socket) or 1 (at least once: after the broker's PUBACK)"`
	Retain         bool          `yaml:"retain" doc:"publish retained messages"`
	Encoding       string        `yaml:"encoding" enum:"json,msgpack,raw" doc:"payload encoding: json, msgpack (the record as stored) or raw (the payload as received)"`
	ClientID       string        `yaml:"client_id" doc:"client id; default pspf-<agent>-<pipeline>-<sink>; must be unique on the broker"`
	Username       string        `yaml:"username" doc:"user name"`
	Password       string        `yaml:"password" secret:"true" doc:"password; use ${ENV} or ${file:/path}"`
	KeepAlive      time.Duration `yaml:"keep_alive" min:">0" doc:"MQTT keep-alive interval"`
	ConnectTimeout time.Duration `yaml:"connect_timeout" min:">0" doc:"how long a connection attempt may take"`
	WriteTimeout   time.Duration `yaml:"write_timeout" min:">0" doc:"how long a batch may wait for its PUBACKs before it is retried"`
	// UnreachableAfter is how long a batch may wait without a PUBACK before
	// the sink shows as offline; the batch keeps waiting until
	// write_timeout. A lost connection shows at once.
	UnreachableAfter time.Duration   `yaml:"unreachable_after" doc:"how long a batch may wait without any PUBACK before the sink shows offline (a lost connection shows at once); the batch keeps waiting until write_timeout"`
	TLS              agent.TLSConfig `yaml:"tls" doc:"TLS for ssl://, mqtts:// and wss:// brokers; refused with tcp://, mqtt:// and ws:// ones"`
	ProtocolVersion  string          `yaml:"protocol_version" enum:"3.1.1,5,auto" doc:"MQTT version: 3.1.1, 5 (message expiry, user properties, reason codes; the broker's Receive Maximum bounds the messages awaiting a PUBACK) or auto (5, or 3.1.1 with a broker that refuses 5; message_expiry, user_properties and unauthorized: dead_letter then fail the connect)"`
	// MessageExpiry and UserProperties need MQTT 5: 3.1.1 has no properties.
	MessageExpiry  time.Duration     `yaml:"message_expiry" doc:"MQTT 5: the broker drops a message that waited this long for a subscriber (whole seconds, rounded up); 0 for never"`
	UserProperties map[string]string `yaml:"user_properties" doc:"MQTT 5 user properties of every message: name to value, the value a template over record fields like the topic's ({_key}, {site})"`
	// Unauthorized says what a message the broker refuses as not
	// authorized (MQTT 5 PUBACK reason code 0x87: an ACL) does: retry (the
	// default: the sink shows offline until the ACL allows it) or
	// dead_letter. Under 3.1.1 a broker cannot say so: it acks the message
	// and drops it.
	Unauthorized string `yaml:"unauthorized" enum:"retry,dead_letter" doc:"MQTT 5: a message the broker refuses as not authorized (PUBACK reason code 0x87, its ACL): retry until it allows it (the sink shows offline), or send the record to the dead letters"`
}

// deadLetter is the unauthorized value that makes a refusal for want of
// an ACL permanent.
const deadLetter = "dead_letter"

// Defaults returns the defaults: QoS 1, JSON payloads, 30s keep-alive, a
// message refused as not authorized retried.
func Defaults() *Config {
	return &Config{QoS: 1, Encoding: "json", ProtocolVersion: "3.1.1", KeepAlive: 30 * time.Second, ConnectTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, UnreachableAfter: 3 * time.Second, Unauthorized: "retry"}
}

// Validate checks the config beyond its fields' tags.
func (c *Config) Validate(n agent.Node) {
	u, err := url.Parse(c.Broker)
	if c.Broker == "" || err != nil || u.Host == "" {
		n.Field("broker").Errorf("must be a URL like tcp://host:1883 or ssl://host:8883, got %q", agent.RedactURL(c.Broker))
	} else if s := u.Scheme; s != "tcp" && s != "ssl" && s != "tls" && s != "mqtt" && s != "mqtts" && s != "ws" && s != "wss" {
		n.Field("broker").Errorf("scheme must be tcp, ssl, mqtt, mqtts, ws or wss, got %q", s)
	} else if _, err := c.TLS.On(s); err != nil {
		// A tls block that would be ignored is refused (agent.TLSConfig).
		n.Field("broker").Errorf("%v", err)
	}
	if t, err := agent.ParseTemplate(c.Topic); c.Topic != "" && err != nil {
		n.Field("topic").Errorf("%v", err)
	} else if c.Topic != "" && t.Static() {
		if why := topicNameErr([]byte(c.Topic)); why != "" {
			n.Field("topic").Errorf("%s, got %q", why, c.Topic)
		}
	}
	// QoS 2 needs a four-way handshake per message for no gain here: the
	// stable ID already lets consumers drop the duplicates QoS 1 may bring.
	if c.QoS != 0 && c.QoS != 1 {
		n.Field("qos").Errorf("must be 0 or 1, got %q", n.Field("qos").Text())
	}
	// Under auto these are accepted: a broker that refuses MQTT 5 then
	// fails the connect, naming them (see needsV5), rather than have them
	// dropped.
	if c.ProtocolVersion == "3.1.1" {
		if n.Field("message_expiry").Present() && c.MessageExpiry != 0 {
			n.Field("message_expiry").Errorf("needs protocol_version: 5 or auto (MQTT 3.1.1 has no message expiry)")
		}
		if len(c.UserProperties) > 0 {
			n.Field("user_properties").Errorf("needs protocol_version: 5 or auto (MQTT 3.1.1 has no user properties)")
		}
		if c.Unauthorized == deadLetter {
			n.Field("unauthorized").Errorf("dead_letter needs protocol_version: 5 or auto (under MQTT 3.1.1 a broker acks a message it does not authorize, and drops it)")
		}
	}
	if c.MessageExpiry < 0 {
		n.Field("message_expiry").Errorf("must not be negative, got %q", n.Field("message_expiry").Text())
	}
	for k, v := range c.UserProperties {
		if _, err := agent.ParseTemplate(v); err != nil {
			n.Field("user_properties").Errorf("%s: %v", k, err)
		}
	}
	// Under 100ms a healthy round trip over a mobile uplink would count as
	// an outage; beyond write_timeout the batch has been retried already
	// (left unset, it is at most write_timeout).
	if f := n.Field("unreachable_after"); f.Present() && (c.UnreachableAfter < 100*time.Millisecond || c.UnreachableAfter > c.WriteTimeout) {
		f.Errorf("must be between 100ms and write_timeout (%s), got %q", c.WriteTimeout, f.Text())
	}
}

// Factory returns the registry entry of the MQTT sink.
func Factory() agent.Factory[agent.Sink] {
	return agent.Typed[agent.Sink]("publishes records to an upstream MQTT broker (QoS 0/1, PUBACK before the cursor moves)", Defaults, func(c *Config, env agent.Env) (agent.Sink, error) {
		return New(*c, env)
	})
}

// Sink publishes records. Write blocks until every message of the batch is
// acknowledged (QoS 1: PUBACK) or write_timeout passes; it is called from one
// goroutine at a time.
type Sink struct {
	cfg   Config
	env   agent.Env
	log   *slog.Logger
	topic *agent.Template
	props []userProp // MQTT 5 user properties, by name
	opts  mqttc.Options
	// broker is the broker URL for messages, its password masked.
	broker string

	mu     sync.Mutex
	cl     *mqttc.Client
	closed bool

	lost chan error // connection losses, for a Write that waits
	// version is the MQTT protocol level of the last connection (4:
	// 3.1.1, 5), 0 before the first: pspf_mqtt_protocol_version, which
	// shows what protocol_version auto chose.
	version atomic.Int32

	buf    []byte   // the payloads of the last Write, reused: the client copies them
	spans  [][2]int // each message's payload in buf
	tbuf   []byte   // the topics of the last Write
	tspans [][2]int
	idx    []int // each message's record
	acks   []<-chan error
	// accepted and refused hold the IDs of records the broker accepted or
	// refused for good in the attempts at a batch that failed: a retry
	// does not send them again. (mosquitto closes the connection after a
	// PUBACK that refuses a message: the messages after it fail, and would
	// fail again behind it on every retry.)
	accepted map[string]struct{}
	refused  map[string]error
	ok       []int // the messages of the last Write the broker took
	slow     bool  // the connection failed the last Write: start the next one slow
	pub      mqttc.Publication
	ubuf     []byte               // user property values of the current record
	users    []mqttc.UserProperty // of the current record
}

// userProp is a user property of every message, its value a template.
type userProp struct {
	key string
	val *agent.Template
}

// maxReconnect is the cap of the reconnect backoff.
const maxReconnect = 30 * time.Second

// New returns an MQTT sink; it connects in Connect.
func New(cfg Config, env agent.Env) (*Sink, error) {
	env = env.WithDefaults()
	t, err := agent.ParseTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("mqtt sink: %w", err)
	}
	cfg.UnreachableAfter = min(cfg.UnreachableAfter, cfg.WriteTimeout)
	s := &Sink{cfg: cfg, env: env, log: env.Logger, topic: t, lost: make(chan error, 1), broker: agent.RedactURL(cfg.Broker)}
	env.Gauge("pspf_mqtt_protocol_version", func() float64 { return float64(s.version.Load()) })
	for _, k := range slices.Sorted(maps.Keys(cfg.UserProperties)) {
		vt, err := agent.ParseTemplate(cfg.UserProperties[k])
		if err != nil {
			return nil, fmt.Errorf("mqtt sink: user_properties: %s: %w", k, err)
		}
		s.props = append(s.props, userProp{key: k, val: vt})
	}
	u, err := url.Parse(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("mqtt sink: broker %s: %w", s.broker, err)
	}
	if u.User != nil {
		// The client logs in with the URL's credentials when username is empty.
		pw, _ := u.User.Password()
		env.Secrets.Add(pw)
	}
	id := cfg.ClientID
	if id == "" {
		id = "pspf-" + env.AgentName + "-" + env.Pipeline + "-" + env.Component
	}
	s.opts = mqttc.Options{Brokers: []string{cfg.Broker}, ClientID: id, Username: cfg.Username, Password: cfg.Password,
		CleanSession: true, KeepAlive: cfg.KeepAlive, ConnectTimeout: cfg.ConnectTimeout, MaxReconnect: maxReconnect,
		// The sink subscribes to nothing: a message the broker sends anyway
		// is acked and dropped, and one over this never read into memory.
		MaxPayload: 64 << 10, Name: "mqtt sink"}
	switch cfg.ProtocolVersion {
	case "5":
		s.opts.ProtocolVersion = 5
	case "auto":
		s.opts.ProtocolVersion, s.opts.NeedsV5 = mqttc.ProtocolAuto, needsV5(&cfg)
	}
	if on, err := cfg.TLS.On(u.Scheme); err != nil {
		return nil, fmt.Errorf("mqtt sink: broker %s: %w", s.broker, err)
	} else if on {
		tc, err := cfg.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("mqtt sink: %w", err)
		}
		s.opts.TLS = tc
	}
	return s, nil
}

// needsV5 names the options of cfg that need MQTT 5, for
// mqttc.Options.NeedsV5: under protocol_version auto a broker that refuses
// MQTT 5 fails the connect instead of having them dropped.
func needsV5(cfg *Config) string {
	var need []string
	if cfg.MessageExpiry != 0 {
		need = append(need, "message_expiry")
	}
	if len(cfg.UserProperties) > 0 {
		need = append(need, "user_properties")
	}
	if cfg.Unauthorized == deadLetter {
		need = append(need, "unauthorized: dead_letter")
	}
	return strings.Join(need, ", ")
}

// Connect connects to the broker. After a success the client reconnects by
// itself, with backoff up to 30s, when the connection drops; Write fails
// meanwhile.
func (s *Sink) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("mqtt sink: %w", agent.ErrStopped)
	}
	if s.cl != nil {
		return nil
	}
	var cl *mqttc.Client
	cl = mqttc.New(s.opts, mqttc.Handlers{
		Connected: func() { s.version.Store(int32(cl.Version())) },
		// The client logs the episode (one WARN per cause); the runner logs
		// the outage once it sees it: with the next Write, or now through
		// Unreachable if one waits.
		Lost: func(_ string, err error) {
			select {
			case s.lost <- err:
			default:
			}
		},
		Log: s.log,
	})
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if _, err := cl.Connect(cctx); err != nil {
		cl.Disconnect(0)
		err = fmt.Errorf("mqtt sink: connect %s: %w", s.broker, err)
		if mqttc.RefusedSetup(err) {
			// Retried like any connect error, but a reload to a config the
			// broker refuses is rolled back (see runner.Pipeline.Started).
			return agent.Permanent(err)
		}
		return err
	}
	s.cl = cl
	return nil
}

// Write publishes recs in order and waits for all acknowledgements: nil,
// a *agent.RejectedError listing the records refused for good when the
// broker took the others, or a retryable error when any record may be
// retried. Refused for good are records whose topic cannot be made (a
// template field they lack), a message over the broker's Maximum Packet
// Size, and, under MQTT 5, one the broker refuses per message as such:
// PUBACK reason codes 0x90 (topic name invalid), 0x95 (packet too large),
// 0x99 (payload format invalid), and 0x87 (not authorized) with
// unauthorized: dead_letter. Any other failure (the connection lost, no
// PUBACK within write_timeout, 0x80, 0x83, 0x97 quota exceeded) retries
// the batch; the retry sends only the records the broker has neither
// accepted nor refused for good yet (a message whose PUBACK was lost is
// sent again, with the same _id), and after a lost connection it sends one
// message, then two, four and so on, each group once the one before is
// answered.
func (s *Sink) Write(ctx context.Context, recs []agent.Record) error {
	s.mu.Lock()
	cl := s.cl
	s.mu.Unlock()
	if cl == nil {
		return fmt.Errorf("mqtt sink: not connected")
	}
	select {
	case <-s.lost: // lost before this Write: Connected tells the rest
	default:
	}
	if !cl.Connected() {
		return fmt.Errorf("mqtt sink: not connected to %s (reconnecting)", s.broker)
	}
	var rej *agent.RejectedError
	reject := func(i int, err error) {
		if rej == nil {
			rej = &agent.RejectedError{}
		}
		rej.Index = append(rej.Index, i)
		rej.Errs = append(rej.Errs, err)
	}
	// The client copies each message into its packet: the buffers are the
	// sink's again once Publish returns.
	b, spans, tb, tspans, idx := s.buf[:0], s.spans[:0], s.tbuf[:0], s.tspans[:0], s.idx[:0]
	for i := range recs {
		r := &recs[i]
		if r.ID != "" {
			if _, ok := s.accepted[r.ID]; ok {
				continue // accepted by an earlier attempt at the batch
			}
			if err, ok := s.refused[r.ID]; ok {
				reject(i, err) // refused for good by an earlier attempt
				continue
			}
		}
		start := len(tb)
		var err error
		tb, err = s.topic.Append(tb, r)
		if err != nil {
			tb = tb[:start]
			reject(i, fmt.Errorf("mqtt sink: topic: %w", err))
			continue
		}
		if why := topicNameErr(tb[start:]); why != "" {
			// A broker closes the connection on it, 3.1.1 and 5 alike.
			reject(i, fmt.Errorf("mqtt sink: topic %q: %s", tb[start:], why))
			tb = tb[:start]
			continue
		}
		tspans = append(tspans, [2]int{start, len(tb)})
		pstart := len(b)
		b = s.appendPayload(b, r)
		spans = append(spans, [2]int{pstart, len(b)})
		idx = append(idx, i)
	}
	s.buf, s.spans, s.tbuf, s.tspans, s.idx = b, spans, tb, tspans, idx
	topic := func(j int) string { return string(tb[tspans[j][0]:tspans[j][1]]) }
	w := s.watch(len(spans))
	defer w.stop()
	acks := s.acks[:0]
	defer func() { clear(acks); s.acks = acks[:0] }()
	// write_timeout bounds the whole Write: under MQTT 5 queueing waits
	// for room under the broker's Receive Maximum too.
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	timedOut := func(err error) error {
		if ctx.Err() == nil && wctx.Err() != nil {
			return fmt.Errorf("mqtt sink: publish: no PUBACK within write_timeout (%s)", s.cfg.WriteTimeout)
		}
		return fmt.Errorf("mqtt sink: publish: %w", err)
	}
	// retry is the first failure that retrying may cure. lost says that
	// the connection failed the batch (not a PUBACK): the next attempt
	// starts slow.
	var retry error
	lost := false
	ok := s.ok[:0] // the messages the broker took, by j
	defer func() { s.ok = ok[:0] }()
	answer := func(j int, err error) {
		w.progress(true)
		var re *mqttc.ReasonError
		isAck := errors.As(err, &re) && re.Packet != "DISCONNECT"
		switch {
		case err == nil:
			ok = append(ok, j)
		case s.permanent(err):
			reject(idx[j], fmt.Errorf("mqtt sink: publish to %q: %w", topic(j), err))
		case isAck:
			if retry == nil {
				retry = fmt.Errorf("mqtt sink: publish to %q: %w", topic(j), err)
			}
		default:
			lost = true
			if retry == nil {
				retry = fmt.Errorf("mqtt sink: publish: %w", err)
			}
		}
	}
	// await takes the answers up to message to; false: write_timeout
	// passed (or ctx ended) first.
	waited := 0
	await := func(to int) bool {
		for ; waited < to; waited++ {
			if acks[waited] == nil {
				continue
			}
			select {
			case err := <-acks[waited]:
				answer(waited, err)
			case <-wctx.Done():
				lost = true
				if retry == nil {
					retry = timedOut(wctx.Err())
				}
				return false
			}
		}
		return true
	}
	// After a connection lost under a batch the next attempt starts slow:
	// one message, its answer, then two, four and so on. A broker that
	// closes the connection after it refused a message (mosquitto) loses
	// the PUBACKs of the messages it read along with that one: sent all at
	// once again, they would be lost again on every retry.
	end := len(spans)
	if s.slow {
		end = min(1, end)
	}
	p := &s.pub
	*p = mqttc.Publication{QoS: byte(s.cfg.QoS), Retain: s.cfg.Retain, Expiry: s.cfg.MessageExpiry}
	timely := true
	for j := range spans {
		if j == end {
			if timely = await(j); !timely {
				break
			}
			end = min(2*end, len(spans))
		}
		p.Topic = topic(j)
		p.Payload = b[spans[j][0]:spans[j][1]]
		p.User = s.userProps(&recs[idx[j]])
		ack, err := cl.PublishAsync(wctx, p)
		if err != nil {
			if tl := (*mqttc.TooLargeError)(nil); errors.As(err, &tl) {
				acks = append(acks, nil) // refused before it was sent
				w.progress(true)
				reject(idx[j], fmt.Errorf("mqtt sink: %w", err))
				continue
			}
			lost = true
			if retry == nil {
				retry = timedOut(err)
			}
			break
		}
		acks = append(acks, ack)
		w.progress(false)
	}
	if timely {
		await(len(acks))
	}
	s.slow = lost
	if retry != nil {
		// The batch is retried: what the broker took or refused for good
		// is not sent again.
		if s.accepted == nil {
			s.accepted, s.refused = map[string]struct{}{}, map[string]error{}
		}
		for _, j := range ok {
			if id := recs[idx[j]].ID; id != "" {
				s.accepted[id] = struct{}{}
			}
		}
		if rej != nil {
			for k, i := range rej.Index {
				if id := recs[i].ID; id != "" {
					s.refused[id] = rej.Errs[k]
				}
			}
		}
		return retry
	}
	clear(s.accepted)
	clear(s.refused)
	if rej != nil {
		return rej
	}
	return nil
}

// topicNameErr says why name is not an MQTT topic name (§4.7.3, §1.5.4),
// or "" if it is one.
func topicNameErr(name []byte) string {
	switch {
	case len(name) == 0:
		return "empty"
	case len(name) > 65535:
		return "longer than 65535 bytes"
	case bytes.ContainsAny(name, "+#"):
		return "a wildcard (+ or #) in a topic name"
	case bytes.IndexByte(name, 0) >= 0:
		return "a NUL character in a topic name"
	case !utf8.Valid(name):
		return "not UTF-8"
	}
	return ""
}

// permanent reports a broker's refusal of one message that retrying
// cannot cure (MQTT 5 PUBACK reason codes): its topic name or payload
// format is invalid, or the packet too large. Not authorized (0x87) is
// an ACL that its operators may fix: retried unless unauthorized says
// dead_letter. The others (unspecified, implementation specific, quota
// exceeded, ...) say the broker cannot take it now.
func (s *Sink) permanent(err error) bool {
	var re *mqttc.ReasonError
	if !errors.As(err, &re) || re.Packet == "DISCONNECT" {
		return false
	}
	switch re.Code {
	case 0x90, 0x95, 0x99:
		return true
	case 0x87:
		return s.cfg.Unauthorized == deadLetter
	}
	return false
}

// writeWatch tells the runner, once per Write, that the connection was
// lost or the broker went silent while the Write waits: on a goroutine of
// its own, so that the Write itself only waits for its PUBACKs. stop ends
// it before Write returns.
type writeWatch struct {
	s    *Sink
	last atomic.Int64 // unix nanos: the Write began, or a message was queued, or a PUBACK came
	left atomic.Int64 // messages not yet acknowledged
	n    int
	done chan struct{}
	wg   sync.WaitGroup
}

// watch starts the watch of a Write of n messages.
func (s *Sink) watch(n int) *writeWatch {
	w := &writeWatch{s: s, n: n, done: make(chan struct{})}
	w.last.Store(time.Now().UnixNano())
	w.left.Store(int64(n))
	if s.env.Unreachable == nil || s.cfg.UnreachableAfter <= 0 {
		return w
	}
	w.wg.Go(w.run)
	return w
}

func (w *writeWatch) run() {
	s := w.s
	tick := time.NewTicker(max(s.cfg.UnreachableAfter/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		var err error
		select {
		case <-w.done:
			return
		case cause := <-s.lost:
			err = fmt.Errorf("mqtt sink: connection to %s lost, %d of %d messages waiting for their PUBACK (retrying until write_timeout): %w", s.broker, w.left.Load(), w.n, cause)
		case <-tick.C:
			if time.Since(time.Unix(0, w.last.Load())) < s.cfg.UnreachableAfter {
				continue
			}
			err = fmt.Errorf("mqtt sink: no PUBACK from %s for %s, %d of %d messages waiting (retrying until write_timeout)", s.broker, s.cfg.UnreachableAfter, w.left.Load(), w.n)
		}
		s.env.Unreachable(err)
		return // once per Write
	}
}

// progress records that a message was queued (acked: that it was
// acknowledged).
func (w *writeWatch) progress(acked bool) {
	w.last.Store(time.Now().UnixNano())
	if acked {
		w.left.Add(-1)
	}
}

func (w *writeWatch) stop() {
	close(w.done)
	w.wg.Wait()
}

// userProps returns the user properties of r's message: a template that
// r lacks a field for leaves its property out. The slice is reused by the
// next call (the client copies it into the packet).
func (s *Sink) userProps(r *agent.Record) []mqttc.UserProperty {
	if len(s.props) == 0 {
		return nil
	}
	users := s.users[:0]
	for _, p := range s.props {
		b, err := p.val.Append(s.ubuf[:0], r)
		s.ubuf = b
		if err == nil {
			users = append(users, mqttc.UserProperty{Key: p.key, Value: string(b)})
		}
	}
	s.users = users
	return users
}

func (s *Sink) appendPayload(b []byte, r *agent.Record) []byte {
	switch s.cfg.Encoding {
	case "msgpack":
		seq := r.Seq
		r.Seq = 0
		out, err := r.MarshalMsg(b)
		r.Seq = seq
		if err == nil {
			return out
		}
	case "raw":
		if len(r.Raw) > 0 || len(r.Fields) == 0 {
			return append(b, r.Raw...)
		}
	}
	return agent.AppendJSON(b, r)
}

// Close disconnects: what is queued is sent first (within a second), a
// PUBACK still to come is not waited for. It is idempotent.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	cl := s.cl
	s.cl, s.closed = nil, true
	s.mu.Unlock()
	if cl != nil {
		cl.Disconnect(0)
	}
	return nil
}
