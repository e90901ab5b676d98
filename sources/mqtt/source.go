// Package mqtt is a source that subscribes to topics on an MQTT broker. A
// QoS 1 message is acknowledged to the broker (PUBACK) only once the batch it
// arrived in is durable in the pipeline log; until then the broker keeps it in
// the agent's persistent session and sends it again after a reconnect or a
// restart. At most max_in_flight messages, and at most max_in_flight_bytes
// of them, are held unacked: beyond either the source stops taking messages
// and the broker holds the rest.
package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/mqttc"
)

// inbound is a received message and when it arrived.
type inbound struct {
	m  message
	at int64
}

// batchBufs are the slices of one batch: its messages, its records and their
// fields. They go back to the source's free list when the batch is acked (the
// runner owns the records until then) and serve a later batch.
type batchBufs struct {
	in     []inbound
	recs   []agent.Record
	fields []agent.Field
}

// flight is a batch between Read and its ack. Until Appended, bb holds it
// whole; Appended gives bb back and keeps in only the messages that still
// need their PUBACK.
type flight struct {
	bb    *batchBufs
	in    []inbound // messages to ack; QoS 0 ones leave at Appended
	total int       // messages in the batch
	held  int       // messages still counted against max_in_flight
	bytes int64     // their bytes, counted against max_in_flight_bytes
	lost0 int       // QoS 0 messages already let go, dropped if nacked
	once  sync.Once
}

// size is what a message counts against max_in_flight_bytes: its payload
// and topic, the memory the source holds for it.
func size(m message) int64 { return int64(len(m.Payload()) + len(m.Topic())) }

// freeBatches is how many acked batches' slices the source keeps for reuse:
// enough for the batches of one group commit.
const freeBatches = 4

// Source is the MQTT source. Build it with New.
type Source struct {
	cfg      Config
	env      agent.Env
	log      *slog.Logger
	dial     dialFunc
	tmpl     *template
	key      []keyPart
	clientID string
	filters  map[string]byte
	anyQoS   bool // some subscription is QoS ≥ 1

	b     broker          // the current client; only Read's goroutine and Close touch it
	queue inQueue         // received, not yet read, and the count of those not yet acked
	done  chan struct{}   // closed by Close: handlers stop waiting
	free  chan *batchBufs // acked batches' slices, for reuse
	vals  []string        // topic template values; Read's goroutine only
	last  *flight         // the batch Read returned last, until Appended

	bg        context.Context // ends with Close: bounds the keepSubscribed loop
	stopBg    context.CancelFunc
	wg        sync.WaitGroup // the keepSubscribed loop
	closeOnce sync.Once
	reconnect atomic.Bool // a nack asks Read to reconnect so that the broker redelivers
	timer     *time.Timer
	prevAt    int64 // arrival (unix nanos) of the last message Read took; 0: none yet
	prevLen   int   // messages in the batch Read returned before
	// subTimeout bounds each wait for a SUBACK or for the birth
	// message's PUBACK (see await): connect_timeout; tests shorten it.
	subTimeout time.Duration
	// setupFailing: an episode of failed setups (SUBSCRIBE, birth
	// message) is under way; see keepSubscribed.
	setupFailing atomic.Bool

	received, acked, nacked, lost0 *agent.Counter
	oversize, mismatch, reconnects *agent.Counter
	subFailures, birthFailures     *agent.Counter
	// version is the MQTT protocol level of the last connection (4:
	// 3.1.1, 5), 0 before the first: pspf_mqtt_protocol_version, which
	// shows what protocol_version auto chose.
	version atomic.Int32
	// versions: what protocol_version auto chose, per broker, for the
	// source's lifetime.
	versions mqttc.Versions
}

// New returns an MQTT source. It starts no goroutines: Connect does.
func New(cfg Config, env agent.Env) (*Source, error) {
	return newSource(cfg, env, dialClient)
}

func newSource(cfg Config, env agent.Env, dial dialFunc) (*Source, error) {
	env = env.WithDefaults()
	tmpl, err := parseTemplate(cfg.TopicTemplate)
	if err != nil {
		return nil, fmt.Errorf("mqtt source: topic_template: %w", err)
	}
	key, err := parseKey(cfg.Key, tmpl)
	if err != nil {
		return nil, fmt.Errorf("mqtt source: key: %w", err)
	}
	s := &Source{
		cfg: cfg, env: env, log: env.Logger, dial: dial, tmpl: tmpl, key: key,
		clientID: cfg.ClientID, filters: map[string]byte{},
		queue: inQueue{wake: make(chan struct{}, 1), space: make(chan struct{}, 1), max: cfg.MaxInFlight, maxBytes: int64(cfg.MaxInFlightBytes)},
		done:  make(chan struct{}),
		free:  make(chan *batchBufs, freeBatches),

		subTimeout: cfg.ConnectTimeout,
	}
	for _, b := range cfg.Brokers {
		if u, err := url.Parse(b); err == nil && u.User != nil {
			pw, _ := u.User.Password()
			env.Secrets.Add(pw)
		}
	}
	s.bg, s.stopBg = context.WithCancel(context.Background())
	if s.clientID == "" {
		s.clientID = "pspf-edge-" + env.AgentName + "-" + env.Pipeline + "-" + env.Component
	}
	s.cfg.Status.Topic = strings.ReplaceAll(cfg.Status.Topic, "{agent}", env.AgentName)
	for _, sub := range cfg.Subscriptions {
		q := byte(min(sub.QoS, 2))
		s.filters[sub.Topic] = q
		s.anyQoS = s.anyQoS || q > 0
	}
	s.received = env.Counter("pspf_mqtt_messages_total")
	s.acked = env.Counter("pspf_mqtt_acked_total")
	s.nacked = env.Counter("pspf_mqtt_nacked_total")
	s.lost0 = env.Counter("pspf_mqtt_dropped_total", "reason", "qos0_nacked")
	s.oversize = env.Counter("pspf_mqtt_dropped_total", "reason", "oversize")
	s.mismatch = env.Counter("pspf_mqtt_template_mismatch_total")
	s.reconnects = env.Counter("pspf_mqtt_reconnects_total")
	s.subFailures = env.Counter("pspf_mqtt_subscribe_failures_total")
	s.birthFailures = env.Counter("pspf_mqtt_birth_failures_total")
	s.queue.full = [2]*agent.Counter{
		env.Counter("pspf_mqtt_in_flight_full_total", "bound", "messages"),
		env.Counter("pspf_mqtt_in_flight_full_total", "bound", "bytes"),
	}
	s.queue.log = s.log
	env.Gauge("pspf_mqtt_protocol_version", func() float64 { return float64(s.version.Load()) })
	env.Gauge("pspf_mqtt_in_flight", func() float64 { n, _ := s.queue.inFlight(); return float64(n) })
	env.Gauge("pspf_mqtt_in_flight_bytes", func() float64 { _, b := s.queue.inFlight(); return float64(b) })
	return s, nil
}

// brokers returns the broker URLs for a message, their passwords masked.
func (s *Source) brokers() string {
	out := make([]string, len(s.cfg.Brokers))
	for i, b := range s.cfg.Brokers {
		out[i] = agent.RedactURL(b)
	}
	return strings.Join(out, ", ")
}

// Connect connects to the first broker that answers, subscribes and
// announces the agent online. The client reconnects by itself after that,
// with exponential backoff up to max_reconnect_interval, subscribing again
// each time. A failure here is returned; the runner retries with backoff.
func (s *Source) Connect(ctx context.Context) error {
	b, err := s.connect(ctx)
	if err != nil {
		return err
	}
	s.b = b
	s.log.Info("mqtt source connected", "client_id", s.clientID, "brokers", s.brokers(), "subscriptions", len(s.filters))
	return nil
}

func (s *Source) connect(ctx context.Context) (broker, error) {
	tc, err := tlsConfig(&s.cfg)
	if err != nil {
		// Validation read the same files: one gone or damaged since is a
		// setup error, not an outage (a new generation is rolled back).
		return nil, agent.Permanent(fmt.Errorf("mqtt source: %w", err))
	}
	var connects atomic.Int64
	// kick asks keepSubscribed to set up the connection just made; a
	// connection made while it is still at the last one's is set up next.
	kick := make(chan struct{}, 1)
	var b broker
	b = s.dial(&s.cfg, s.clientID, tc, handlers{
		message:  s.onMessage,
		oversize: s.oversize.Inc,
		drained:  s.queue.drained,
		connected: func() {
			if v, ok := b.(interface{ Version() byte }); ok { // the real client
				s.version.Store(int32(v.Version()))
			}
			if connects.Add(1) == 1 {
				return // the first connection is set up by connect itself
			}
			s.reconnects.Inc()
			if s.env.ReportError != nil {
				s.env.ReportError(nil) // connected again: the loss is no longer the last error
			}
			select {
			case kick <- struct{}{}:
			default:
			}
		},
		lost: func(cause string, err error) {
			s.env.Counter("pspf_mqtt_connections_lost_total", "cause", cause).Inc()
			if s.env.ReportError != nil {
				s.env.ReportError(fmt.Errorf("mqtt source: connection lost (%s): %w", cause, err))
			}
		},
		log:      s.log,
		versions: &s.versions,
	})
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	present, err := b.Connect(cctx)
	if err != nil {
		b.Disconnect(0)
		err = fmt.Errorf("mqtt source: connect to %s: %w", s.brokers(), err)
		if mqttc.RefusedSetup(err) {
			// Retried like any connect error, but a reload to a config the
			// broker refuses is rolled back (see runner.Pipeline.Started).
			return nil, agent.Permanent(err)
		}
		return nil, err
	}
	if present {
		// The broker kept the session, subscriptions included, and starts
		// sending its backlog at once: more than max_in_flight of it blocks
		// the client until Read runs, so the SUBACK (which refreshes the
		// subscriptions in case the config changed) cannot be waited for
		// here: keepSubscribed subscribes in the background.
		select {
		case kick <- struct{}{}:
		default: // a reconnect since has kicked already
		}
	} else if err := s.setup(cctx, b); err != nil {
		b.Disconnect(0)
		return nil, err
	} else {
		s.setUp() // a nack's reconnect ends an episode of failed setups too
	}
	kctx, stop := context.WithCancel(s.bg)
	kc := &keptClient{broker: b, stop: stop, done: make(chan struct{})}
	s.wg.Go(func() {
		defer close(kc.done)
		s.keepSubscribed(kctx, b, kick)
	})
	return kc, nil
}

// onMessage runs on the client's goroutine for every message. It blocks while
// max_in_flight messages, or max_in_flight_bytes of them, are unacked: the
// client then stops reading the socket, TCP flow control reaches the broker,
// and the broker queues the rest in the session. A message that arrives
// while the source closes, or while its client disconnects (stop), is left
// unacked for the broker to send again. Messages over max_payload never get
// here: the client drops them.
func (s *Source) onMessage(m message, stop <-chan struct{}) {
	if !s.queue.acquire(size(m), s.done, stop) {
		return
	}
	s.received.Inc()
	s.queue.push(inbound{m: m, at: s.env.Now().UnixNano()})
}

// inQueue holds received messages until Read takes them. It wakes a waiting
// Read once, when as many messages as that Read asked for are queued, rather
// than once per message: while a batch lingers, the client's goroutine
// appends without handing over to Read's goroutine every time.
type inQueue struct {
	mu   sync.Mutex
	in   []inbound
	need int           // messages a waiting Read wants; 0: none waits
	wake chan struct{} // capacity 1: need was reached, or a burst ended
	// holding: the waiting Read holds messages already (it lingers).
	// ended: the client has pushed all it read and pauses before it reads
	// again (see handlers.drained); a push clears it.
	holding, ended bool

	held     int           // messages taken from the broker and not yet acked
	bytes    int64         // their sizes (see size)
	max      int           // max_in_flight
	maxBytes int64         // max_in_flight_bytes
	space    chan struct{} // capacity 1: release made room

	// An episode of waiting for room lasts from the first message that
	// waits to the first that does not: it is counted once in full (by
	// the bound that stopped it) and noted once in the debug log.
	waiting bool
	full    [2]*agent.Counter // by bound: messages, bytes
	// stalls counts the waits for room begun, blocked the handlers
	// waiting now: while one waits the client reads nothing (see await).
	stalls  uint64
	blocked int
	log     *slog.Logger
}

// acquire counts a message of n bytes in flight, waiting while
// max_in_flight messages are, or while it would take the bytes in flight
// past max_in_flight_bytes (a message larger than the budget waits until
// it is alone); it reports false, counting nothing, if done or stop is
// closed first.
func (q *inQueue) acquire(n int64, done, stop <-chan struct{}) bool {
	waited := false
	q.mu.Lock()
	for {
		byCount := q.held >= q.max
		if !byCount && (q.held == 0 || q.bytes+n <= q.maxBytes) {
			break
		}
		if !q.waiting {
			q.waiting = true
			bound, b := "bytes", 1
			if byCount {
				bound, b = "messages", 0
			}
			if q.full[b] != nil {
				q.full[b].Inc()
			}
			if q.log != nil {
				q.log.Debug("mqtt source: in-flight bound reached; the broker holds further messages until earlier ones are acked",
					"bound", bound, "messages", q.held, "bytes", q.bytes, "max_in_flight", q.max, "max_in_flight_bytes", q.maxBytes)
			}
		}
		q.stalls++
		q.blocked++
		q.mu.Unlock()
		ok := true
		select {
		case <-q.space:
		case <-done:
			ok = false
		case <-stop:
			ok = false
		}
		waited = true
		q.mu.Lock()
		q.blocked--
		if !ok {
			q.mu.Unlock()
			return false
		}
	}
	if !waited {
		q.waiting = false
	}
	q.held++
	q.bytes += n
	room := q.held < q.max && q.bytes < q.maxBytes
	q.mu.Unlock()
	if waited && room { // pass the wake-up on to another waiting handler, if any
		select {
		case q.space <- struct{}{}:
		default:
		}
	}
	return true
}

// release counts n acked messages of the given bytes out of flight.
func (q *inQueue) release(n int, bytes int64) {
	q.mu.Lock()
	q.held -= n
	q.bytes -= bytes
	q.mu.Unlock()
	select {
	case q.space <- struct{}{}:
	default:
	}
}

// inFlight returns the count of messages in flight and their bytes.
func (q *inQueue) inFlight() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held, q.bytes
}

// stalled returns how many waits for room have begun and whether one is
// under way.
func (q *inQueue) stalled() (uint64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stalls, q.blocked > 0
}

// push queues a message, waking Read if it now has what it waits for.
func (q *inQueue) push(in inbound) {
	q.mu.Lock()
	q.in = append(q.in, in)
	q.ended = false
	wake := q.need > 0 && len(q.in) >= q.need
	if wake {
		q.need = 0
	}
	q.mu.Unlock()
	if wake {
		q.signal()
	}
}

// signal wakes a Read waiting for messages, if there is one; the wake
// channel holds one wake-up, so a signal never blocks.
func (q *inQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// drained notes that the client has pushed every message it read and
// pauses before its next read, and wakes a Read that waits with messages:
// nothing more comes within a linger, so its batch is complete.
func (q *inQueue) drained() {
	q.mu.Lock()
	q.ended = true
	wake := q.need > 0 && (q.holding || len(q.in) > 0)
	if wake {
		q.need = 0
	}
	q.mu.Unlock()
	if wake {
		q.signal()
	}
}

// burstEnded reports whether the client pauses after pushing everything
// it read (see drained).
func (q *inQueue) burstEnded() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ended
}

// take moves up to max-len(batch) queued messages to batch. When batch is
// still shorter than want, it asks to be woken when the rest is queued; a
// stale wake-up is harmless, the caller takes again.
func (q *inQueue) take(batch []inbound, max, want int) []inbound {
	q.mu.Lock()
	n := min(len(q.in), max-len(batch))
	batch = append(batch, q.in[:n]...)
	rest := copy(q.in, q.in[n:])
	clear(q.in[rest:])
	q.in = q.in[:rest]
	q.need = 0
	q.holding = false
	if len(batch) < want {
		q.need = want - len(batch) // rest is 0: all was taken
		q.holding = len(batch) > 0
	}
	q.mu.Unlock()
	return batch
}

// Read waits for a message, then gathers more for up to linger or until
// batch_size, and returns them as records: Raw is the payload, the topic
// template's fields and the topic field come first. The ack PUBACKs every
// message of the batch when called with nil. Called with an error, it sends
// no PUBACK and makes the next Read reconnect, so that the broker sends the
// unacked messages again (QoS 0 messages cannot be redelivered: they are
// counted as dropped with reason qos0_nacked).
func (s *Source) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	if s.reconnect.CompareAndSwap(true, false) {
		s.redeliver(ctx)
	}
	var bb *batchBufs
	select {
	case bb = <-s.free:
	default:
		bb = &batchBufs{in: make([]inbound, 0, s.cfg.BatchSize)}
	}
	for {
		bb.in = s.queue.take(bb.in[:0], s.cfg.BatchSize, 1)
		if len(bb.in) > 0 {
			break
		}
		select {
		case <-s.queue.wake:
			continue
		case <-ctx.Done():
		case <-s.done:
		}
		s.queue.take(nil, 0, 0) // no longer waiting
		s.release(bb)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("mqtt source: %w", agent.ErrStopped)
	}
	bb.in = s.gather(ctx, bb.in)
	f := &flight{bb: bb, in: bb.in, total: len(bb.in), held: len(bb.in)}
	for _, in := range bb.in {
		f.bytes += size(in.m)
	}
	s.last = f
	return s.records(bb), s.ackFunc(f), nil
}

// Appended is called by the runner once the batch Read returned last is in
// the log (see agent.Appender). Its QoS 0 messages stop counting against
// max_in_flight and max_in_flight_bytes: the broker never sends them again,
// so holding them until the fsync would only slow a QoS 0 flood down to
// max_in_flight per fsync interval. Their memory is let go too, and so
// are the batch's buffers; the QoS 1 messages stay until the ack, which
// PUBACKs them.
func (s *Source) Appended() {
	f := s.last
	s.last = nil
	if f == nil || f.bb == nil {
		return
	}
	n0, b0 := 0, int64(0)
	for _, in := range f.in {
		if in.m.Qos() == 0 {
			n0++
			b0 += size(in.m)
		}
	}
	if n0 == 0 {
		// All QoS 1: the messages stay until the ack, which PUBACKs them,
		// but not the batch's buffers (sized for batch_size: about 200
		// KB at the defaults). At low rates many small batches wait for
		// one group commit (up to the log's sync_interval), and each
		// kept its buffers: 12 MB more anonymous memory at 100 msg/s.
		f.in = slices.Clone(f.in)
		s.release(f.bb)
		f.bb = nil
		return
	}
	var keep []inbound
	if n0 < len(f.in) {
		keep = make([]inbound, 0, len(f.in)-n0)
		for _, in := range f.in {
			if in.m.Qos() != 0 {
				keep = append(keep, in)
			}
		}
	}
	f.in, f.held, f.bytes, f.lost0 = keep, f.held-n0, f.bytes-b0, n0
	s.release(f.bb)
	f.bb = nil
	s.queue.release(n0, b0)
}

// gather adds queued messages to batch, waiting up to linger for batch_size.
// It waits only while messages come closer together than linger: when the
// previous batch was a single message and the newest message of this one
// arrived more than linger after the one before it, the next is not
// expected within linger either, and waiting would only add a timer
// wake-up and latency to every message (at 100 msg/s and the default 5ms
// linger, one per message, for batches of one all the same). A gap after a
// batch of several is a stall (the broker waiting for PUBACKs, which wait
// for the fsync), not a sparse stream: the flow resumes at full rate, and
// the batch lingers as before. So does the first message after start; as
// soon as messages come faster than linger again, batches linger and fill.
// Under MQTT 5 the client reads the socket at most once per linger and
// reports when it has handed over all it read (handlers.drained): the
// batch is then complete, the wait having been spent in the socket, and
// it goes on at once instead of lingering on the timer.
func (s *Source) gather(ctx context.Context, batch []inbound) []inbound {
	defer func() { s.prevAt, s.prevLen = batch[len(batch)-1].at, len(batch) }()
	if len(batch) >= s.cfg.BatchSize || s.cfg.Linger <= 0 || s.sparse(batch) || s.queue.burstEnded() {
		return batch
	}
	if s.timer == nil {
		s.timer = time.NewTimer(s.cfg.Linger)
	} else {
		s.timer.Reset(s.cfg.Linger)
	}
	defer s.timer.Stop()
	for len(batch) < s.cfg.BatchSize {
		batch = s.queue.take(batch, s.cfg.BatchSize, s.cfg.BatchSize)
		if len(batch) >= s.cfg.BatchSize || s.queue.burstEnded() {
			break
		}
		select {
		case <-s.queue.wake:
			continue
		case <-s.timer.C:
		case <-ctx.Done():
		}
		batch = s.queue.take(batch, s.cfg.BatchSize, 0)
		return batch
	}
	return batch
}

// sparse reports whether the previous batch was a single message and the
// newest message of batch came more than linger after the message before
// it (in batch, or the last one Read took).
func (s *Source) sparse(batch []inbound) bool {
	if s.prevLen != 1 {
		return false
	}
	prev := s.prevAt
	if len(batch) >= 2 {
		prev = batch[len(batch)-2].at
	}
	return batch[len(batch)-1].at-prev > int64(s.cfg.Linger)
}

// records turns the batch's messages into its records; the fields of all
// records share one slice.
func (s *Source) records(bb *batchBufs) []agent.Record {
	batch := bb.in
	if cap(bb.recs) < len(batch) {
		bb.recs = make([]agent.Record, len(batch), cap(batch))
	}
	recs := bb.recs[:len(batch)]
	nf := 0
	if s.tmpl != nil {
		nf = len(s.tmpl.names)
	}
	per := nf + len(s.cfg.UserProperties)
	if s.cfg.TopicField != "" {
		per++
	}
	var fields []agent.Field
	if per > 0 {
		if cap(bb.fields) < len(batch)*per {
			bb.fields = make([]agent.Field, cap(batch)*per)
		}
		fields = bb.fields
	}
	if len(s.vals) < nf {
		s.vals = make([]string, nf)
	}
	vals := s.vals[:nf]
	for i, in := range batch {
		r := &recs[i]
		r.Source = s.env.Component
		r.RecvTime = in.at
		r.Raw = in.m.Payload()
		if per == 0 {
			continue
		}
		f := fields[i*per : i*per : (i+1)*per]
		topic := in.m.Topic()
		if s.cfg.TopicField != "" {
			f = append(f, agent.String(s.cfg.TopicField, topic))
		}
		for _, name := range s.cfg.UserProperties {
			if v, ok := in.m.UserProperty(name); ok {
				f = append(f, agent.String(name, v))
			}
		}
		if nf > 0 {
			if s.tmpl.match(topic, vals) {
				for j, name := range s.tmpl.names {
					f = append(f, agent.String(name, vals[j]))
				}
				if s.key != nil {
					r.Key = buildKey(s.key, vals)
				}
			} else {
				s.mismatch.Inc()
			}
		}
		r.Fields = f
	}
	return recs
}

func (s *Source) ackFunc(f *flight) agent.AckFunc {
	return func(_ context.Context, err error) {
		f.once.Do(func() {
			if err == nil {
				for _, in := range f.in {
					in.m.Ack()
				}
				s.acked.Add(f.total)
			} else {
				s.nacked.Add(f.total)
				s.lost0.Add(f.lost0)
				redeliverable := false
				for _, in := range f.in {
					if in.m.Qos() == 0 {
						s.lost0.Inc()
					} else {
						redeliverable = true
					}
				}
				if redeliverable {
					s.reconnect.Store(true)
				}
			}
			s.queue.release(f.held, f.bytes)
			if f.bb != nil {
				s.release(f.bb)
			}
			// The runner may hold this func a while after the call (the
			// committer's group): it must not hold the messages too.
			f.in, f.bb = nil, nil
		})
	}
}

// release clears an acked batch's slices, so that they hold on to no
// message or string, and keeps them for a later batch if there is room.
func (s *Source) release(bb *batchBufs) {
	clear(bb.in)
	bb.in = bb.in[:0]
	clear(bb.recs[:cap(bb.recs)])
	clear(bb.fields)
	select {
	case s.free <- bb:
	default:
	}
}

// redeliver drops the connection and makes a new one. The broker sends every
// message it has not had a PUBACK for again on the new connection: the ones
// that were nacked, and also any that are in flight right now (their acks go
// nowhere: they arrive again as duplicates, which the records' IDs downstream
// and at-least-once delivery allow).
func (s *Source) redeliver(ctx context.Context) {
	s.log.Warn("mqtt source: a batch was not accepted; reconnecting so that the broker redelivers it")
	if s.b != nil {
		s.b.Disconnect(0)
		s.b = nil
	}
	bo := agent.Backoff{Initial: 100 * time.Millisecond, Max: s.cfg.MaxReconnect}
	for ctx.Err() == nil {
		b, err := s.connect(ctx)
		if err == nil {
			s.b = b
			s.reconnects.Inc()
			return
		}
		s.log.Warn("mqtt source: reconnect failed", "err", err)
		agent.Sleep(ctx, bo.Next())
	}
}

// Close announces the agent offline (when a status topic is set) and
// disconnects. Messages read but not acked, and messages still queued, were
// never PUBACKed: the broker sends them again to the next session with the
// same client id. Close is idempotent.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.stopBg()
		defer s.wg.Wait()
		if s.b == nil {
			return
		}
		if st := s.cfg.Status; st.Topic != "" {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := s.b.Publish(pctx, st.Topic, byte(st.QoS), st.Retain, []byte(st.Offline)); err != nil {
				s.log.Warn("mqtt source: offline message not sent", "err", err)
			}
			cancel()
		}
		s.b.Disconnect(250 * time.Millisecond)
		s.b = nil
	})
	return nil
}

var _ agent.Source = (*Source)(nil)
