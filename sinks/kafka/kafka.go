// Package kafka is a sink that produces records to Kafka with franz-go:
// at-least-once with the idempotent producer by default, or exactly-once with
// transactions that commit the sink's cursor together with the records, or,
// in a group of agents reading Kafka, records carried by the runner's
// transactions (carried.go).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/kafkaconn"
)

// Header names carried by every produced record.
const (
	HeaderID       = "pspf-id"       // the record's stable ID: a consumer de-duplicates on it
	HeaderAgent    = "pspf-agent"    // the agent that sent it
	HeaderPipeline = "pspf-pipeline" // the pipeline it came through
	HeaderSource   = "pspf-source"   // the source that read it (absent if unknown)
)

// Factory returns the registry entry of the Kafka sink.
func Factory() agent.Factory[agent.Sink] {
	return agent.Typed[agent.Sink]("produces records to Kafka (idempotent, or exactly-once with transactions)", Defaults, func(c *Config, env agent.Env) (agent.Sink, error) {
		return New(*c, env)
	})
}

// Sink produces records to Kafka. Write blocks until Kafka has acknowledged
// every record of the batch (acks: all waits for the in-sync replicas) or
// failed one; it is called from one goroutine at a time.
type Sink struct {
	cfg      Config
	env      agent.Env
	log      *slog.Logger
	topic    *agent.Template
	static   string    // the topic when the template has no placeholders
	opts     []kgo.Opt // the producer's
	base     []kgo.Opt // connection only, for the cursor reader
	agentB   []byte
	pipeB    []byte
	cursorID string // agent/pipeline/sink: the cursor record's key

	mu     sync.Mutex // guards cl and closed
	cl     *kgo.Client
	closed bool

	live liveness          // traffic with the brokers, for the unreachable report
	logs *kafkaconn.Logger // franz-go's warnings, once each per outage

	// Scratch reused by every Write; records are only referenced until
	// Write returns.
	buf   []byte
	spans []span
	krs   []kgo.Record
	ptrs  []*kgo.Record
	hdrs  []kgo.RecordHeader
	index []int // krs[i] is recs[index[i]]
	errs  []error
	lastT string
	bufs  sync.Pool // of *[]byte: encodings between Writes (see forget)

	// accepted holds the IDs of records Kafka accepted in the attempts at
	// a batch that failed: they are not sent again when it is retried.
	// At most one batch's worth; emptied when a batch is done.
	accepted map[string]struct{}

	maxBuffered int64          // the producer's max buffered bytes
	full        *agent.Counter // Writes larger than maxBuffered

	eos *txnState // exactly_once only
}

type span struct{ topic, key, val, id, src [2]int }

// New returns a Kafka sink; it connects in Connect.
func New(cfg Config, env agent.Env) (*Sink, error) {
	env = env.WithDefaults()
	cfg.UnreachableAfter = min(cfg.UnreachableAfter, cfg.WriteTimeout)
	t, err := agent.ParseTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	s := &Sink{
		cfg: cfg, env: env, log: env.Logger, topic: t, logs: kafkaconn.NewLogger(env.Logger),
		agentB:   []byte(env.AgentName),
		pipeB:    []byte(env.Pipeline),
		cursorID: env.AgentName + "/" + env.Pipeline + "/" + env.Component,
	}
	if t.Static() {
		s.static = cfg.Topic
	}
	s.maxBuffered = int64(cfg.MaxBufferedBytes)
	if s.maxBuffered == 0 {
		s.maxBuffered = 2 * int64(cfg.BatchBytes)
	}
	if env.Metrics != nil {
		s.full = env.Counter("pspf_kafka_buffer_full_total")
	}
	if s.opts, err = s.clientOpts(); err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	if cfg.Delivery == "exactly_once" {
		s.eos = &txnState{}
	}
	return s, nil
}

func (s *Sink) clientOpts() ([]kgo.Opt, error) {
	c := &s.cfg
	id := c.ClientID
	if id == "" {
		id = "pspf-edge-" + s.env.AgentName
	}
	tc, err := tlsConfig(c.TLS)
	if err != nil {
		return nil, err
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(id),
		kgo.Dialer(kafkaconn.Dialer(&s.live, c.DialTimeout, tc)),
		kgo.WithLogger(s.logs),
	}
	if !c.ClientMetrics {
		base = append(base, kgo.DisableClientMetrics())
	}
	switch c.SASL.Mechanism {
	case "plain":
		base = append(base, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()))
	case "scram-sha-256":
		base = append(base, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		base = append(base, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()))
	}
	s.base = base
	opts := append(base[:len(base):len(base)],
		kgo.ProduceRequestTimeout(c.RequestTimeout),
		kgo.ProducerLinger(c.Linger),
		kgo.ProducerBatchMaxBytes(int32(c.BatchBytes)),
		kgo.MaxBufferedBytes(int(s.maxBuffered)),
	)
	switch c.Compression {
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.WithCompressor(newLZ4Compressor()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	default:
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	switch c.Acks {
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if c.Partitioner == "round_robin" {
		opts = append(opts, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	} else {
		opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	}
	if c.AutoCreateTopics {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	} else {
		// Two metadata answers that agree the topic is missing are enough.
		opts = append(opts, kgo.UnknownTopicRetries(2))
	}
	if c.Delivery == "exactly_once" {
		tid := c.TransactionalID
		if tid == "" {
			tid = "pspf-" + s.env.AgentName + "-" + s.env.Pipeline + "-" + s.env.Component
		}
		opts = append(opts, kgo.TransactionalID(tid), kgo.TransactionTimeout(c.WriteTimeout))
	}
	return opts, nil
}

// Connect creates the client and checks that a broker answers (and, with
// exactly_once, fences an earlier instance and loads the cursor). On error
// nothing is left open.
func (s *Sink) Connect(ctx context.Context) error {
	_, err := s.client(ctx, true)
	return err
}

// client returns the client, making one if there is none: after Connect
// failed, or after a Write timed out and dropped the previous one. ping asks
// a broker to answer first.
func (s *Sink) client(ctx context.Context, ping bool) (*kgo.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("kafka sink: %w", agent.ErrStopped)
	}
	if s.cl != nil {
		return s.cl, nil
	}
	cl, err := kgo.NewClient(s.opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+s.cfg.RequestTimeout)
	defer cancel()
	if ping || s.eos != nil {
		if err := cl.Ping(pctx); err != nil {
			cl.Close()
			return nil, fmt.Errorf("kafka sink: connect: %w", err)
		}
	}
	if s.eos != nil {
		if err := s.eos.connect(pctx, s, cl); err != nil {
			cl.Close()
			return nil, fmt.Errorf("kafka sink: %w", err)
		}
	}
	s.cl = cl
	return cl, nil
}

// drop closes cl, failing whatever it still buffers, so that the next Write
// starts on a fresh client.
func (s *Sink) drop(cl *kgo.Client) {
	s.mu.Lock()
	if s.cl == cl {
		s.cl = nil
	}
	s.mu.Unlock()
	cl.Close()
}

// send produces ptrs and waits for every promise, in the calling
// goroutine: ProduceSync ends the linger of the partitions the batch went
// to, so a Write at a low rate costs one wake-up (the last
// acknowledgement). Both the at-least-once Write and a transaction's
// produce go through it.
//
// If the wait takes longer than write_timeout (a cluster that went away
// while requests were in flight, which the idempotent producer cannot fail
// safely) or ctx ends, it drops the client 100ms later: every record then
// fails and the batch is retried with backoff on a new client. Long before
// that, once the brokers have been silent for unreachable_after while
// records wait, it reports the cluster unreachable, once: the sink shows
// as offline, with the reason, while the produce goes on retrying. Both
// are timers that fire only when a Write is slow; nothing is failed or
// sent twice for them.
func (s *Sink) send(ctx context.Context, cl *kgo.Client, ptrs []*kgo.Record) ([]error, error) {
	errs := s.errs[:0]
	for range ptrs {
		errs = append(errs, nil)
	}
	s.errs = errs
	if len(ptrs) == 0 {
		return errs, nil
	}
	s.checkBuffered(ptrs)
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	g := &guard{gone: make(chan struct{})}
	start := time.Now()
	if s.env.Unreachable != nil && s.cfg.UnreachableAfter > 0 {
		g.watch(s, start, len(ptrs))
	}
	stop := context.AfterFunc(wctx, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.finished {
			return
		}
		g.drop = time.AfterFunc(100*time.Millisecond, func() {
			g.mu.Lock()
			if g.finished {
				g.mu.Unlock()
				return
			}
			g.dropped = true
			g.mu.Unlock()
			s.drop(cl)
			close(g.gone)
		})
	})
	res := cl.ProduceSync(wctx, ptrs...)
	stop()
	dropped := g.finish()
	for i, r := range res {
		if r.Err != nil {
			spread(ptrs, res[i:], errs)
			break
		}
	}
	if !dropped {
		return errs, nil // the deadline, if any, failed what was safe to fail
	}
	if ctx.Err() != nil {
		return errs, fmt.Errorf("kafka sink: %w", ctx.Err())
	}
	if err := s.live.lastErr(); err != nil {
		return errs, fmt.Errorf("kafka sink: no acknowledgement within write_timeout (%s), reconnecting: %w", s.cfg.WriteTimeout, err)
	}
	return errs, fmt.Errorf("kafka sink: no acknowledgement within write_timeout (%s): reconnecting", s.cfg.WriteTimeout)
}

// spread puts the errors of res, which come in the order Kafka answered,
// at the index of their record in ptrs.
func spread(ptrs []*kgo.Record, res kgo.ProduceResults, errs []error) {
	at := make(map[*kgo.Record]int, len(ptrs))
	for j, p := range ptrs {
		at[p] = j
	}
	for _, r := range res {
		if r.Err != nil {
			errs[at[r.Record]] = r.Err
		}
	}
}

// guard holds send's timers: none fires once the Write has its answers.
type guard struct {
	mu       sync.Mutex
	finished bool          // send has its answers
	dropped  bool          // the client is being dropped
	gone     chan struct{} // closed once it was
	drop     *time.Timer   // write_timeout passed: drops the client
	tick     *time.Timer   // the unreachable check
}

// watch arms the unreachable check: at unreachable_after, then every
// eighth of it until it reports, once, or the Write ends.
func (g *guard) watch(s *Sink, start time.Time, n int) {
	every := max(s.cfg.UnreachableAfter/8, 10*time.Millisecond)
	var check func()
	check = func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.finished {
			return
		}
		gone, cause := s.live.unreachable(start, s.cfg.UnreachableAfter)
		if !gone {
			g.tick.Reset(every)
			return
		}
		err := fmt.Errorf("kafka sink: no answer from the brokers for %s, %d records waiting (retrying until write_timeout)", s.cfg.UnreachableAfter, n)
		if cause != nil {
			err = fmt.Errorf("kafka sink: no answer from the brokers for %s, %d records waiting (retrying until write_timeout): %w", s.cfg.UnreachableAfter, n, cause)
		}
		s.env.Unreachable(err) // under g.mu: never after the Write returned
	}
	g.mu.Lock()
	g.tick = time.AfterFunc(s.cfg.UnreachableAfter, check)
	g.mu.Unlock()
}

// finish stops the timers and reports whether the client was dropped,
// once it was: the next Write makes a new one.
func (g *guard) finish() bool {
	g.mu.Lock()
	g.finished = true
	if g.tick != nil {
		g.tick.Stop()
	}
	if g.drop != nil {
		g.drop.Stop()
	}
	dropped := g.dropped
	g.mu.Unlock()
	if dropped {
		<-g.gone
	}
	return dropped
}

// Write produces recs and returns once Kafka acknowledged all of them: nil,
// a *agent.RejectedError listing the records Kafka refused for good (too
// large, an invalid topic name; a missing topic or a missing ACL only with
// missing_topic or unauthorized set to dead_letter) when the others were
// accepted, or a retryable error when any record may be retried.
// A retried batch produces its accepted records again: they carry the same
// pspf-id header.
func (s *Sink) Write(ctx context.Context, recs []agent.Record) error {
	if len(recs) == 0 {
		return nil
	}
	cl, err := s.client(ctx, false)
	if err != nil {
		return err
	}
	defer s.forget()
	if s.eos != nil {
		return s.answered(s.eos.write(ctx, s, cl, recs))
	}
	rej := s.build(recs)
	s.skipAccepted()
	errs, err := s.send(ctx, cl, s.ptrs)
	if err == nil {
		err = s.classify(errs, rej)
	}
	if err != nil && !agent.IsPermanent(err) {
		s.remember(errs)
	} else {
		clear(s.accepted)
	}
	return s.answered(err)
}

// skipAccepted drops from s.ptrs the records Kafka accepted in an earlier
// attempt at the batch: a batch held back by a few records (a topic not
// created yet, a leader away) is not sent again in full on every retry.
// An ID names one record only, so a record with a remembered ID is in Kafka.
func (s *Sink) skipAccepted() {
	if len(s.accepted) == 0 {
		return
	}
	keep := 0
	for j, p := range s.ptrs {
		if _, ok := s.accepted[string(p.Headers[0].Value)]; ok {
			continue
		}
		s.ptrs[keep], s.index[keep] = p, s.index[j]
		keep++
	}
	s.ptrs, s.index = s.ptrs[:keep], s.index[:keep]
}

// remember keeps the IDs of the records of a failed attempt that Kafka
// accepted, for skipAccepted.
func (s *Sink) remember(errs []error) {
	if s.accepted == nil {
		s.accepted = map[string]struct{}{}
	}
	for j, err := range errs {
		if id := s.ptrs[j].Headers[0].Value; err == nil && len(id) > 0 {
			s.accepted[string(id)] = struct{}{}
		}
	}
}

// answered passes err on; when the cluster took the batch (all of it, or
// all but records refused for good), franz-go's warnings start afresh.
func (s *Sink) answered(err error) error {
	if err == nil || agent.IsPermanent(err) {
		s.logs.Reset()
	}
	return err
}

// forget lets go of the batch's encoding once Write is done with it: the
// records that point into it are cleared and the buffer goes back to the
// sink's pool, where the next Write finds it under load and the collector
// frees it once the sink has been idle for two collections. So a batch of
// large records leaves nothing of itself behind.
func (s *Sink) forget() {
	if s.buf == nil {
		return
	}
	clear(s.krs)
	clear(s.hdrs)
	b := s.buf[:0]
	s.buf = nil
	s.bufs.Put(&b)
}

// encodedSize estimates the bytes build appends for recs: each record's
// strings and raw payload, and a few bytes of JSON or msgpack per field.
func encodedSize(recs []agent.Record) int {
	n := 0
	for i := range recs {
		r := &recs[i]
		n += 64 + len(r.Key) + len(r.ID) + len(r.Source) + len(r.Raw)
		for j := range r.Fields {
			f := &r.Fields[j]
			n += 24 + len(f.Name) + len(f.Str) + len(f.Bytes)
		}
	}
	return n
}

// checkBuffered counts and notes (at debug level) a Write whose records
// are more than the producer may hold at once (max_buffered_bytes): it is
// sent in parts, each Produce waiting for the acks that make room. The
// records' keys, values and IDs are in s.buf; the other headers are the
// same for every record.
func (s *Sink) checkBuffered(ptrs []*kgo.Record) {
	perRecord := len(HeaderID) + len(HeaderAgent) + len(HeaderPipeline) + len(HeaderSource) + len(s.agentB) + len(s.pipeB)
	n := int64(len(s.buf)) + int64(len(ptrs))*int64(perRecord)
	if n <= s.maxBuffered {
		return
	}
	if s.full != nil {
		s.full.Inc()
	}
	s.log.Debug("kafka sink: batch larger than max_buffered_bytes; sending it in parts", "bytes", n, "max_buffered_bytes", s.maxBuffered, "records", len(ptrs))
}

// build turns recs into s.krs / s.ptrs. Records whose topic cannot be made
// are returned as rejected.
func (s *Sink) build(recs []agent.Record) *agent.RejectedError {
	var rej *agent.RejectedError
	b := s.buf[:0]
	if b == nil {
		if p, ok := s.bufs.Get().(*[]byte); ok {
			b = *p
		}
		// Sized once for the batch, not grown by doubling, a copy at each
		// step.
		b = slices.Grow(b, encodedSize(recs))
	}
	spans := s.spans[:0]
	index := s.index[:0]
	for i := range recs {
		r := &recs[i]
		var sp span
		if s.static == "" {
			start := len(b)
			var err error
			b, err = s.topic.Append(b, r)
			if err != nil {
				b = b[:start]
				if rej == nil {
					rej = &agent.RejectedError{}
				}
				rej.Index = append(rej.Index, i)
				rej.Errs = append(rej.Errs, fmt.Errorf("kafka sink: topic: %w", err))
				continue
			}
			sp.topic = [2]int{start, len(b)}
		}
		start := len(b)
		b = append(b, r.Key...)
		sp.key = [2]int{start, len(b)}
		start = len(b)
		b = s.appendValue(b, r)
		sp.val = [2]int{start, len(b)}
		start = len(b)
		b = append(b, r.ID...)
		sp.id = [2]int{start, len(b)}
		start = len(b)
		b = append(b, r.Source...)
		sp.src = [2]int{start, len(b)}
		spans = append(spans, sp)
		index = append(index, i)
	}
	s.buf, s.spans, s.index = b, spans, index

	n := len(spans)
	if cap(s.krs) < n {
		s.krs = make([]kgo.Record, n)
		s.ptrs = make([]*kgo.Record, n)
		s.hdrs = make([]kgo.RecordHeader, 4*n)
	}
	s.krs, s.ptrs, s.hdrs = s.krs[:n], s.ptrs[:n], s.hdrs[:4*n]
	for j, sp := range spans {
		r := &recs[index[j]]
		topic := s.static
		if topic == "" {
			tb := b[sp.topic[0]:sp.topic[1]]
			if string(tb) != s.lastT {
				s.lastT = string(tb)
			}
			topic = s.lastT
		}
		h := s.hdrs[4*j : 4*j : 4*j+4]
		h = append(h,
			kgo.RecordHeader{Key: HeaderID, Value: b[sp.id[0]:sp.id[1]]},
			kgo.RecordHeader{Key: HeaderAgent, Value: s.agentB},
			kgo.RecordHeader{Key: HeaderPipeline, Value: s.pipeB})
		if sp.src[1] > sp.src[0] {
			h = append(h, kgo.RecordHeader{Key: HeaderSource, Value: b[sp.src[0]:sp.src[1]]})
		}
		kr := &s.krs[j]
		*kr = kgo.Record{Topic: topic, Value: b[sp.val[0]:sp.val[1]], Headers: h}
		if sp.key[1] > sp.key[0] {
			kr.Key = b[sp.key[0]:sp.key[1]]
		}
		if r.EventTime != 0 {
			kr.Timestamp = r.Time()
		}
		s.ptrs[j] = kr
	}
	return rej
}

func (s *Sink) appendValue(b []byte, r *agent.Record) []byte {
	switch s.cfg.Encoding {
	case "msgpack":
		seq := r.Seq
		r.Seq = 0
		out, err := r.MarshalMsg(b)
		r.Seq = seq
		if err != nil { // only for values msgp cannot hold, which fields never are
			return agent.AppendJSON(b, r)
		}
		return out
	case "raw":
		if len(r.Raw) > 0 || len(r.Fields) == 0 {
			return append(b, r.Raw...)
		}
	}
	return agent.AppendJSON(b, r)
}

// classify folds the per-record results into Write's result.
func (s *Sink) classify(errs []error, rej *agent.RejectedError) error {
	var retry error
	for j, err := range errs {
		if err == nil {
			continue
		}
		topic := s.ptrs[j].Topic
		if s.permanent(err) {
			if rej == nil {
				rej = &agent.RejectedError{}
			}
			rej.Index = append(rej.Index, s.index[j])
			rej.Errs = append(rej.Errs, fmt.Errorf("kafka sink: topic %q: %w", topic, err))
			continue
		}
		if retry == nil {
			retry = fmt.Errorf("kafka sink: produce to %q: %w", topic, err)
		}
	}
	if retry != nil {
		return retry // the batch is retried; refused records are refused again
	}
	if rej != nil {
		return rej
	}
	return nil
}

// permanent reports errors that retrying cannot fix: the record is too
// large, or the topic name is invalid. A missing topic and a missing ACL
// are fixed by the cluster's operators, often after the agent started (a
// topic created late, an ACL granted after a deployment): they are retried
// unless missing_topic or unauthorized say dead_letter.
func (s *Sink) permanent(err error) bool {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge),
		errors.Is(err, kerr.InvalidTopicException), errors.Is(err, kerr.InvalidRecord):
		return true
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return s.cfg.Unauthorized == deadLetter
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return s.cfg.MissingTopic == deadLetter && !s.cfg.AutoCreateTopics
	}
	return false
}

// Close flushes nothing (Write already waited) and closes the client; with
// exactly_once an open transaction is aborted. It is idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	cl := s.cl
	s.cl, s.closed = nil, true
	s.mu.Unlock()
	if cl == nil {
		return nil
	}
	if s.eos != nil {
		s.eos.close(ctx, s, cl)
	}
	cl.Close()
	return nil
}
