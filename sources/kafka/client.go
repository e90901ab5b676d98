package kafka

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/kafkaconn"
)

// connOpts returns the options of every client of the source: brokers,
// TLS, SASL, timeouts and backoff. TLS files are read here, at every
// connect, so that a renewed certificate takes effect.
func (s *Source) connOpts(suffix string) ([]kgo.Opt, error) {
	c := &s.cfg
	tc, err := tlsConfig(c.TLS)
	if err != nil {
		return nil, err
	}
	id := c.ClientID
	if id == "" {
		id = "pspf-edge-" + s.env.AgentName
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(id + suffix),
		kgo.Dialer(kafkaconn.Dialer(&s.live, c.DialTimeout, tc)),
		kgo.WithHooks(&s.live),
		kgo.WithLogger(s.logs),
		kgo.RetryBackoffFn(s.backoff),
		kgo.RequestTimeoutOverhead(c.RequestTimeout),
		// KIP-714 pushes compress with lz4 in 4 MiB blocks: an 8 MiB heap
		// spike per push on an agent that runs in a few MB (see the
		// Kafka sink's README).
		kgo.DisableClientMetrics(),
	}
	switch c.SASL.Mechanism {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

// opts returns the consumer's options.
func (s *Source) opts() ([]kgo.Opt, error) {
	c := &s.cfg
	opts, err := s.connOpts("")
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.FetchMaxBytes(int32(c.FetchMaxBytes)),
		kgo.FetchMaxPartitionBytes(int32(c.FetchMaxPartitionBytes)),
		kgo.MaxConcurrentFetches(c.MaxConcurrentFetches),
		kgo.FetchMaxWait(c.FetchMaxWait),
		// A committed offset that is out of range (retention deleted what
		// it points at) resumes at the earliest record still there: the
		// fewest records skipped, and franz-go reports the loss.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.ConsumeStartOffset(s.startOffset()),
	)
	if c.Isolation == "read_committed" {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	if s.direct {
		return opts, nil // the partitions are added once their offsets are known
	}
	opts = append(opts,
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(c.Topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.SessionTimeout(c.SessionTimeout),
		kgo.RebalanceTimeout(c.RebalanceTimeout),
		kgo.HeartbeatInterval(c.HeartbeatInterval),
	)
	if c.StaticMembership {
		opts = append(opts, kgo.InstanceID(s.instanceID))
	}
	if s.owner != nil {
		opts = append(opts, kgo.AdjustFetchOffsetsFn(s.adjustOffsets))
	}
	if s.eos {
		// An assignment's offsets are fetched once the transactions
		// that hold offsets of its partitions have ended, and only then
		// is the state restored (txn.go).
		opts = append(opts, kgo.RequireStableFetchOffsets())
	}
	return opts, nil
}

func (s *Source) startOffset() kgo.Offset {
	if s.cfg.Start == "latest" {
		return kgo.NewOffset().AtEnd()
	}
	return kgo.NewOffset().AtStart()
}

// open makes a client and checks the cluster (see Connect). On error
// nothing is left open.
func (s *Source) open(ctx context.Context) error {
	opts, err := s.opts()
	if err != nil {
		// Validation read the same files: one gone or damaged since is a
		// setup error, not an outage.
		return agent.Permanent(fmt.Errorf("kafka source: %w", err))
	}
	s.live.reset()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return agent.Permanent(fmt.Errorf("kafka source: %w", err))
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+s.cfg.RequestTimeout)
	defer cancel()
	if err := s.check(cctx, cl); err != nil {
		cl.Close()
		return err
	}
	s.cl.Store(cl)
	return nil
}

// check asks for the topics' metadata and, with explicit partitions, for
// their committed offsets, which it hands to the client.
func (s *Source) check(ctx context.Context, cl *kgo.Client) error {
	topics := s.topicNames()
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return s.connectErr("connect to "+fmt.Sprint(s.cfg.Brokers), err)
	}
	counts := map[string]int{}
	ids := map[string][16]byte{}
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				return fmt.Errorf("kafka source: topic %q does not exist", name)
			}
			return s.connectErr("topic "+name, err)
		}
		counts[name] = len(t.Partitions)
		ids[name] = t.TopicID
	}
	if !s.direct {
		return nil
	}
	s.mu.Lock()
	s.topicIDs = ids // for commits, which name topics by ID from OffsetCommit v10 on
	s.mu.Unlock()
	for _, t := range topics {
		for _, p := range s.cfg.Partitions[t] {
			if int(p) >= counts[t] {
				return fmt.Errorf("kafka source: topic %q has %d partitions, no partition %d", t, counts[t], p)
			}
		}
	}
	return s.assignDirect(ctx, cl)
}

// connectErr wraps a connect error; refused credentials or certificates
// and missing ACLs are setup errors.
func (s *Source) connectErr(what string, err error) error {
	err = fmt.Errorf("kafka source: %s: %w", what, err)
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert x509.CertificateInvalidError
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &badCert):
		return agent.Permanent(err)
	}
	return err
}

// assignDirect loads the offsets Group has committed for the explicit
// partitions and starts consuming them from there (from start where there
// is none).
func (s *Source) assignDirect(ctx context.Context, cl *kgo.Client) error {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = s.group
	topics := sortedTopics(s.cfg.Partitions)
	for _, t := range topics {
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic = t
		rt.Partitions = append([]int32(nil), s.cfg.Partitions[t]...)
		sort.Slice(rt.Partitions, func(i, j int) bool { return rt.Partitions[i] < rt.Partitions[j] })
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return s.connectErr("fetch the committed offsets of group "+s.group, err)
	}
	committed := map[tp]kmsg.OffsetFetchResponseTopicPartition{}
	// A group that never committed may not exist yet: no offsets.
	if err := kerr.ErrorForCode(resp.ErrorCode); errors.Is(err, kerr.GroupIDNotFound) {
		resp.Topics = nil
	} else if err != nil {
		return s.connectErr("fetch the committed offsets of group "+s.group, err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return s.connectErr(fmt.Sprintf("fetch the committed offset of %s[%d]", t.Topic, p.Partition), err)
			}
			committed[tp{t.Topic, p.Partition}] = p
		}
	}
	assign := map[string]map[int32]kgo.Offset{}
	s.mu.Lock()
	for _, t := range topics {
		assign[t] = map[int32]kgo.Offset{}
		for _, p := range s.cfg.Partitions[t] {
			at := s.startOffset()
			off := int64(-1)
			if c, ok := committed[tp{t, p}]; ok && c.Offset >= 0 {
				off = c.Offset
				at = kgo.NewOffset().At(c.Offset).WithEpoch(c.LeaderEpoch)
			}
			assign[t][p] = at
			s.parts[tp{t, p}] = newPartState(tp{t, p}, off)
			s.lag(tp{t, p})
		}
	}
	s.mu.Unlock()
	cl.AddConsumePartitions(assign)
	return nil
}
