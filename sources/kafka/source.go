// Package kafka is a source that consumes Kafka topics with franz-go, as a
// member of a consumer group (cooperative-sticky rebalancing) or from
// explicit partitions. An offset is committed only once every record
// before it is durable in the pipeline log (the batch's ack, after the
// fsync): a crash or a rebalance replays records, it never skips one.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/kafkaconn"
)

// Factory returns the registry entry of the Kafka source.
func Factory() agent.Factory[agent.Source] {
	return agent.Typed[agent.Source]("consumes Kafka topics (consumer group or explicit partitions); offsets are committed only for records durable in the log",
		Defaults, func(c *Config, env agent.Env) (agent.Source, error) { return New(*c, env) })
}

// freeBatches is how many acked batches' slices the source keeps for
// reuse: enough for the batches of one group commit.
const freeBatches = 4

// Source is the Kafka source. Build it with New; the runner calls Connect,
// then Read from one goroutine, then Close after the last ack.
type Source struct {
	cfg        Config
	env        agent.Env
	log        *slog.Logger
	group      string
	instanceID string
	direct     bool // explicit partitions: no group membership
	build      *builder
	owner      agent.PartitionOwner // partition-scoped state (owner.go); nil: commits follow durability
	eos        bool                 // exactly-once (txn.go): read_committed, stable offsets, commits in transactions only

	cl atomic.Pointer[kgo.Client] // set and cleared by Read's goroutine and Close

	// mu guards the partitions, the records polled and not yet handed
	// out, the bytes in flight and changed. Rebalance callbacks run on
	// franz-go's goroutines, acks on the runner's.
	mu       sync.Mutex
	parts    map[tp]*partState
	pending  []*kgo.Record // polled, not yet in a batch
	inFlight int64         // bytes of the batches not yet acked
	changed  chan struct{} // closed and replaced at every ack

	// commitMu makes commits one at a time; a revoke holds it from the
	// moment it takes its partitions until their final commit, so that
	// no commit of a partition it gave up can follow.
	commitMu      sync.Mutex
	commitFailing bool          // in an episode of failed commits; under commitMu
	poke          chan struct{} // capacity 1: an ack moved a durable offset

	restart      atomic.Bool // a nack: the next Read restarts the client, which reads from the committed offsets
	restartStale atomic.Bool // with restart: partitions of an earlier membership are held (stale.go)
	deferred     error       // a fetch error that came with records; Read's goroutine only
	waiting      bool        // in an episode of waiting for in-flight room; Read's goroutine only

	live      liveness
	logs      *kafkaconn.Logger
	bg        context.Context // ends with Close: the committer and the watch
	stopBg    context.CancelFunc
	wg        sync.WaitGroup
	started   bool // the goroutines run; Connect's goroutine only
	closeOnce sync.Once
	closed    atomic.Bool
	free      chan *batchBufs
	lags      map[tp]*atomic.Int64 // guarded by mu; never shrinks (a gauge each)
	topicIDs  map[string][16]byte  // explicit partitions: the topics' IDs; guarded by mu

	oversizeWarned time.Time // the last WARN of a record over max_payload; guarded by mu
	oversizeSince  int       // records dropped for it since; guarded by mu

	records, bytes, acked, nacked, commits, commitErrs *agent.Counter
	oversize, dataLoss, full, restarts, unreachable    *agent.Counter
	assigned, revoked, lost, stale                     *agent.Counter
	membership                                         func(*kgo.Client) (string, int32) // the member id and generation: GroupMetadata, a fake in tests
	staleWarned                                        bool                              // in an episode of refusing partitions of an earlier membership; under mu
	online                                             atomic.Bool
}

// New returns a Kafka source. It starts no goroutines and opens no
// connection: Connect does.
func New(cfg Config, env agent.Env) (*Source, error) {
	env = env.WithDefaults()
	s := &Source{
		cfg: cfg, env: env, log: env.Logger,
		group:      cfg.Group,
		instanceID: cfg.InstanceID,
		direct:     len(cfg.Partitions) > 0,
		parts:      map[tp]*partState{},
		changed:    make(chan struct{}),
		poke:       make(chan struct{}, 1),
		logs:       kafkaconn.NewLogger(env.Logger),
		free:       make(chan *batchBufs, freeBatches),
		lags:       map[tp]*atomic.Int64{},
	}
	id := "pspf-edge-" + env.AgentName + "-" + env.Pipeline + "-" + env.Component
	if s.group == "" {
		s.group = id
	}
	if s.instanceID == "" {
		s.instanceID = id
	}
	s.live.groupHold = cfg.RebalanceTimeout
	s.bg, s.stopBg = context.WithCancel(context.Background())
	s.records = env.Counter("pspf_kafka_source_records_total")
	s.bytes = env.Counter("pspf_kafka_source_bytes_total")
	s.acked = env.Counter("pspf_kafka_source_acked_total")
	s.nacked = env.Counter("pspf_kafka_source_nacked_total")
	s.commits = env.Counter("pspf_kafka_source_commits_total")
	s.commitErrs = env.Counter("pspf_kafka_source_commit_errors_total")
	s.oversize = env.Counter("pspf_kafka_source_dropped_total", "reason", "oversize")
	s.dataLoss = env.Counter("pspf_kafka_source_data_loss_total")
	s.full = env.Counter("pspf_kafka_source_in_flight_full_total")
	s.restarts = env.Counter("pspf_kafka_source_restarts_total")
	s.unreachable = env.Counter("pspf_kafka_source_unreachable_total")
	s.assigned = env.Counter("pspf_kafka_source_rebalances_total", "event", "assigned")
	s.revoked = env.Counter("pspf_kafka_source_rebalances_total", "event", "revoked")
	s.lost = env.Counter("pspf_kafka_source_rebalances_total", "event", "lost")
	s.stale = env.Counter("pspf_kafka_source_rebalances_total", "event", "stale")
	s.membership = (*kgo.Client).GroupMetadata
	s.build = newBuilder(env.Component, cfg.Metadata, cfg.Headers, env.Counter("pspf_kafka_source_headers_dropped_total"))
	env.Gauge("pspf_kafka_source_in_flight_bytes", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.inFlight)
	})
	env.Gauge("pspf_kafka_source_partitions", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.parts))
	})
	env.Gauge("pspf_kafka_source_online", func() float64 {
		if s.online.Load() {
			return 1
		}
		return 0
	})
	return s, nil
}

// Connect creates the client, checks that a broker answers and that the
// topics (and partitions) exist, and, with explicit partitions, loads the
// committed offsets. A group member joins the group in the background; its
// partitions come with the first Reads. An error leaves nothing open and
// is retried by the runner with backoff; refused credentials or
// certificates, TLS files gone, or topics the ACLs deny are setup errors
// (agent.Permanent).
func (s *Source) Connect(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("kafka source: %w", agent.ErrStopped)
	}
	if err := s.open(ctx); err != nil {
		return err
	}
	if !s.started {
		s.started = true
		s.wg.Add(2)
		go s.commitLoop()
		go s.watch()
	}
	s.log.Info("kafka source connected", "group", s.group, "brokers", s.cfg.Brokers, "topics", s.topicNames())
	return nil
}

func (s *Source) topicNames() []string {
	if !s.direct {
		return s.cfg.Topics
	}
	return sortedTopics(s.cfg.Partitions)
}

// Read returns the next batch: at most batch_size records, polled from
// franz-go, within what max_in_flight_bytes leaves (at least one record).
// It blocks while the batches in flight hold that budget (backpressure:
// franz-go then stops fetching once its own buffers are full) and until
// records come. The ack with nil lets the partitions' offsets move past
// the batch; with an error, the next Read restarts the client, which reads
// again from the committed offsets (the batch and what followed it come
// again). A fetch error with no records to return is returned: the runner
// reports it and retries with backoff.
func (s *Source) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	if err := s.deferred; err != nil {
		s.deferred = nil
		return nil, nil, err
	}
	if s.restart.Swap(false) {
		s.restartClient(ctx)
	}
	if s.cl.Load() == nil {
		if err := s.open(ctx); err != nil {
			return nil, nil, err
		}
	}
	if err := s.room(ctx); err != nil {
		return nil, nil, err
	}
	for {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n > 0 {
			break
		}
		if err := s.poll(ctx); err != nil {
			return nil, nil, err
		}
	}
	recs, f := s.take()
	return recs, s.ackFunc(f), nil
}

// room waits while the batches in flight hold max_in_flight_bytes. Each
// such episode is counted once and noted at debug level: it is how
// backpressure works, not an error.
func (s *Source) room(ctx context.Context) error {
	for {
		s.mu.Lock()
		used, ch := s.inFlight, s.changed
		s.mu.Unlock()
		if used < int64(s.cfg.MaxInFlightBytes) {
			s.waiting = false
			return nil
		}
		if !s.waiting {
			s.waiting = true
			s.full.Inc()
			s.log.Debug("kafka source: in-flight bound reached; reading waits for acks", "bytes", used, "max_in_flight_bytes", int64(s.cfg.MaxInFlightBytes))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// poll takes what franz-go has fetched into pending. With
// BlockRebalanceOnPoll no rebalance callback runs from the poll until
// AllowRebalance: the records are in pending, where a revoke finds and
// drops those of its partitions, before any callback can run.
func (s *Source) poll(ctx context.Context) error {
	cl := s.cl.Load()
	fs := cl.PollRecords(ctx, s.cfg.BatchSize)
	var errs []error
	s.mu.Lock()
	for i := range fs {
		for j := range fs[i].Topics {
			t := &fs[i].Topics[j]
			for k := range t.Partitions {
				p := &t.Partitions[k]
				if p.Err != nil {
					errs = append(errs, partitionError(t.Topic, p.Partition, p.Err))
				}
				if len(p.Records) == 0 {
					continue
				}
				s.pending = append(s.pending, p.Records...)
				end := p.HighWatermark
				if s.cfg.Isolation == "read_committed" && p.LastStableOffset >= 0 {
					end = p.LastStableOffset
				}
				s.lag(tp{t.Topic, p.Partition}).Store(max(0, end-(p.Records[len(p.Records)-1].Offset+1)))
			}
		}
	}
	got := len(s.pending) > 0
	s.mu.Unlock()
	cl.AllowRebalance()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var first error
	for _, err := range errs {
		var loss *kgo.ErrDataLoss
		switch {
		case errors.Is(err, kgo.ErrClientClosed):
			return fmt.Errorf("kafka source: %w", agent.ErrStopped)
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			// Our own ctx, checked above; franz-go's own ends are retried.
		case errors.As(err, &loss):
			// Kafka no longer has offsets we had not read (retention, a
			// truncated log): franz-go goes on from where it can.
			lostN := max(0, loss.ResetTo-loss.ConsumedTo)
			s.dataLoss.Add(int(lostN))
			s.log.Warn("kafka source: records gone from Kafka before they were read (retention or a truncated log); reading on",
				"topic", loss.Topic, "partition", loss.Partition, "from", loss.ConsumedTo, "to", loss.ResetTo, "records", lostN)
		default:
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		if got {
			s.deferred = first // after these records
			return nil
		}
		return first
	}
	return nil
}

// partitionError names the partition of a fetch error; a client-wide error
// has no topic.
func partitionError(topic string, partition int32, err error) error {
	if topic == "" {
		return fmt.Errorf("kafka source: %w", err)
	}
	return fmt.Errorf("kafka source: %s[%d]: %w", topic, partition, err)
}

// lag returns the lag gauge's value of a partition, registering the gauge
// the first time. Called with mu held.
func (s *Source) lag(t tp) *atomic.Int64 {
	if l, ok := s.lags[t]; ok {
		return l
	}
	l := new(atomic.Int64)
	s.lags[t] = l
	s.env.Gauge("pspf_kafka_source_lag", func() float64 { return float64(l.Load()) }, "topic", t.topic, "partition", strconv.Itoa(int(t.partition)))
	return l
}

// take makes a batch of the pending records and registers its spans with
// their partitions. Records over max_payload are dropped here (counted,
// logged) but their offsets stay in the batch's spans, so that they are
// committed past once the records before them are durable.
func (s *Source) take() ([]agent.Record, *flight) {
	var bb *batchBufs
	select {
	case bb = <-s.free:
	default:
		bb = &batchBufs{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	budget := int64(s.cfg.MaxInFlightBytes) - s.inFlight
	n, bytes, nfields, arena := 0, int64(0), 0, 0
	for n < len(s.pending) && n < s.cfg.BatchSize {
		kr := s.pending[n]
		size := payloadSize(kr)
		if n > 0 && bytes+size+recordOverhead > budget {
			break
		}
		bytes += size + recordOverhead
		if size <= int64(s.cfg.MaxPayload) {
			nfields += s.build.fieldsFor(kr)
			arena += int(size)
		}
		n++
	}
	taken := s.pending[:n]
	if cap(bb.recs) < n {
		bb.recs = make([]agent.Record, 0, n)
	}
	if cap(bb.fields) < nfields {
		bb.fields = make([]agent.Field, nfields)
	}
	if cap(bb.arena) < arena {
		bb.arena = make([]byte, 0, arena)
	}
	recs, fields, buf := bb.recs[:0], bb.fields[:cap(bb.fields)], bb.arena[:0]
	f := &flight{bb: bb, bytes: bytes}
	now := s.env.Now().UnixNano()
	for _, kr := range taken {
		t := tp{kr.Topic, kr.Partition}
		ps := s.parts[t]
		if ps == nil {
			// Assigned before the client was stored (its first join):
			// under the member it is now.
			ps = newPartState(t, -1)
			if cl := s.cl.Load(); cl != nil && !s.direct {
				ps.member, _ = s.membership(cl)
			}
			s.parts[t] = ps
		}
		i := f.spanOf(ps)
		f.spans[i].end, f.spans[i].epoch = kr.Offset+1, kr.LeaderEpoch
		size := payloadSize(kr)
		s.bytes.Add(int(size))
		if size > int64(s.cfg.MaxPayload) {
			s.dropOversize(kr, size)
			continue
		}
		recs = append(recs, agent.Record{})
		fields, buf = s.build.build(&recs[len(recs)-1], kr, now, fields, buf)
	}
	for i := range f.spans {
		f.spans[i].ps.add(&f.spans[i])
	}
	clear(taken)
	s.pending = s.pending[n:]
	if len(s.pending) == 0 {
		s.pending = s.pending[:0:0] // let the polled slice go
	}
	s.inFlight += bytes
	f.n = len(recs)
	s.records.Add(len(recs))
	bb.recs, bb.arena = recs, buf
	return recs, f
}

// dropOversize counts a record over max_payload and logs it: one WARN,
// then at most one a minute with the count since, the others at DEBUG.
// Called with mu held.
func (s *Source) dropOversize(kr *kgo.Record, size int64) {
	s.oversize.Inc()
	s.oversizeSince++
	args := []any{"topic", kr.Topic, "partition", kr.Partition, "offset", kr.Offset, "bytes", size, "max_payload", int64(s.cfg.MaxPayload)}
	if now := time.Now(); now.Sub(s.oversizeWarned) >= time.Minute {
		s.log.Warn("kafka source: record larger than max_payload dropped", append(args, "dropped_since_last_warning", s.oversizeSince)...)
		s.oversizeWarned, s.oversizeSince = now, 0
		return
	}
	s.log.Debug("kafka source: record larger than max_payload dropped", args...)
}

// ackFunc returns the batch's ack. With nil, the partitions' durable
// offsets move past the batch (and the committer is told); with an error,
// they stay before it, and the next Read restarts the client so that the
// batch is read again. Either way its bytes leave the in-flight budget.
func (s *Source) ackFunc(f *flight) agent.AckFunc {
	return func(_ context.Context, err error) {
		f.once.Do(func() {
			moved := false
			s.mu.Lock()
			for i := range f.spans {
				sp := &f.spans[i]
				sp.done, sp.nacked = true, err != nil
				if !sp.ps.gone && sp.ps.advance() {
					moved = true
				}
			}
			s.inFlight -= f.bytes
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			if err != nil {
				s.nacked.Add(f.n)
				s.restart.Store(true)
			} else {
				s.acked.Add(f.n)
			}
			if moved {
				select {
				case s.poke <- struct{}{}:
				default:
				}
			}
			s.release(f.bb)
			f.bb = nil
		})
	}
}

// release clears an acked batch's slices, so that they hold on to no
// record or string, and keeps them for a later batch if there is room.
func (s *Source) release(bb *batchBufs) {
	clear(bb.recs[:cap(bb.recs)])
	bb.recs = bb.recs[:0]
	clear(bb.fields)
	bb.arena = bb.arena[:0]
	select {
	case s.free <- bb:
	default:
	}
}

// restartClient commits what is durable and drops the client after a
// nack: every partition's state goes (acks still to come for it no longer
// count), and the next client reads from the committed offsets, so the
// nacked batch and everything after it come again.
func (s *Source) restartClient(ctx context.Context) {
	s.restarts.Inc()
	stale := s.restartStale.Swap(false)
	if stale {
		s.log.Warn("kafka source: partitions of an earlier membership of the group are held; restarting the client, which restores them if they come again")
	} else {
		s.log.Warn("kafka source: a batch was not accepted; reading again from the committed offsets")
	}
	cl := s.cl.Load()
	if cl == nil {
		return
	}
	if stale {
		s.loseStaleHeld(cl)
	}
	s.commitNow(ctx)
	s.forget()
	s.cl.Store(nil)
	cl.Close()
}

// forget drops every partition's state and the records not handed out:
// the client they came from is going.
func (s *Source) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, ps := range s.parts {
		ps.gone = true
		delete(s.parts, t)
	}
	clear(s.pending)
	s.pending = nil
}

// Close commits the offsets of what is durable, leaves the group (a static
// member only closes its connections: its partitions wait for it until
// session_timeout) and stops the goroutines Connect started. Records read
// and not durable were never committed: they are read again by whoever
// takes their partitions next. It is idempotent.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stopBg()
		s.wg.Wait()
		cl := s.cl.Load()
		if cl == nil {
			return
		}
		s.commitNow(ctx)
		cl.Close() // a revoke, if any, finds everything committed
		s.cl.Store(nil)
		s.online.Store(false)
	})
	return nil
}

// backoff is franz-go's retry backoff: exponential from 250ms to
// max_retry_backoff with equal jitter (uniform in the upper half of each
// step), so that a fleet that lost the same cluster spreads its retries and
// no retry comes sooner than half its step.
func (s *Source) backoff(tries int) time.Duration {
	ceil := 250 * time.Millisecond
	for i := 1; i < tries && ceil < s.cfg.MaxRetryBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, s.cfg.MaxRetryBackoff)
	half := ceil / 2
	return half + time.Duration(rand.Int64N(int64(ceil-half)+1))
}

var (
	_ agent.Source            = (*Source)(nil)
	_ agent.PartitionedSource = (*Source)(nil)
)
