package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent"
)

// Changelog returns the compacted changelog topic that keeps the
// partitions' state on the source's cluster (`state: {store: kafka,
// changelog: TOPIC}`), with the source's brokers, TLS and SASL. Partition
// p of the changelog holds the state of input partition p. It connects
// nothing yet.
func (s *Source) Changelog(topic string) (agent.Changelog, error) {
	if s.direct {
		return nil, errors.New("kafka source: a changelog needs a group member (topics, not partitions)")
	}
	if topic == "" {
		return nil, errors.New("kafka source: changelog topic is empty")
	}
	return &changelog{s: s, topic: topic}, nil
}

// changelog is agent.Changelog on a Kafka topic. Appends go through one
// idempotent producer (acks=all); each Read has a client of its own, which
// reads one partition directly (no group) to the end it found at the
// start.
type changelog struct {
	s     *Source
	topic string

	mu      sync.Mutex
	prod    *kgo.Client // made by the first Append
	checked bool        // the topic exists with enough partitions
}

// ensure checks the changelog topic, creating it (compacted, with as many
// partitions as the input topic with the most) when it does not exist.
// The caller holds mu.
func (c *changelog) ensure(ctx context.Context, cl *kgo.Client) error {
	if c.checked {
		return nil
	}
	topics := append([]string{c.topic}, c.s.cfg.Topics...)
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafka changelog %q: metadata: %w", c.topic, err)
	}
	want, have, exists := 0, 0, false
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case name == c.topic && errors.Is(err, kerr.UnknownTopicOrPartition):
		case err != nil:
			return fmt.Errorf("kafka changelog %q: topic %q: %w", c.topic, name, err)
		case name == c.topic:
			exists, have = true, len(t.Partitions)
		default:
			want = max(want, len(t.Partitions))
		}
	}
	if !exists {
		if err := c.create(ctx, cl, want); err != nil {
			return err
		}
		// The client keeps the answer above (the topic unknown) for
		// metadata_min_age (5s): the restore's list offsets would fail
		// on it, and the member rejoin the group, until then.
		if err := c.known(ctx, cl); err != nil {
			return err
		}
		have = want
	}
	if have < want {
		return agent.Permanent(fmt.Errorf("kafka changelog %q: %d partitions, fewer than the input's %d: it must be partitioned like the input", c.topic, have, want))
	}
	c.checked = true
	return nil
}

// known asks for the changelog topic's metadata, which refreshes what the
// client knows of it, until the brokers know the topic (a topic just
// created may take a moment to reach every broker) or request_timeout
// passed.
func (c *changelog) known(ctx context.Context, cl *kgo.Client) error {
	deadline := time.Now().Add(c.s.cfg.RequestTimeout)
	for {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(c.topic)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return fmt.Errorf("kafka changelog %q: metadata: %w", c.topic, err)
		}
		err = kerr.UnknownTopicOrPartition
		for _, t := range resp.Topics {
			if t.Topic != nil && *t.Topic == c.topic {
				err = kerr.ErrorForCode(t.ErrorCode)
			}
		}
		switch {
		case err == nil:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("kafka changelog %q: created, then: %w", c.topic, err)
		case !agent.Sleep(ctx, 50*time.Millisecond):
			return fmt.Errorf("kafka changelog %q: created, then: %w", c.topic, ctx.Err())
		}
	}
}

// create makes the changelog topic, compacted.
func (c *changelog) create(ctx context.Context, cl *kgo.Client, partitions int) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = c.topic, int32(partitions), -1
	cfg := kmsg.NewCreateTopicsRequestTopicConfig()
	cfg.Name, cfg.Value = "cleanup.policy", kmsg.StringPtr("compact")
	rt.Configs = append(rt.Configs, cfg)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = int32(c.s.cfg.RequestTimeout.Milliseconds())
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafka changelog %q: create: %w", c.topic, err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("kafka changelog %q: create: %w", c.topic, err)
		}
	}
	c.s.log.Info("kafka changelog topic created", "topic", c.topic, "partitions", partitions, "cleanup_policy", "compact")
	return nil
}

// producer returns the producer, made and the topic checked on first use.
func (c *changelog) producer(ctx context.Context) (*kgo.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prod == nil {
		opts, err := c.s.connOpts("-changelog")
		if err != nil {
			return nil, agent.Permanent(fmt.Errorf("kafka changelog %q: %w", c.topic, err))
		}
		opts = append(opts,
			kgo.DefaultProduceTopic(c.topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerLinger(0),
		)
		if c.prod, err = kgo.NewClient(opts...); err != nil {
			return nil, agent.Permanent(fmt.Errorf("kafka changelog %q: %w", c.topic, err))
		}
	}
	if err := c.ensure(ctx, c.prod); err != nil {
		return nil, err
	}
	return c.prod, nil
}

// Append writes recs to partition p and waits for acks=all.
func (c *changelog) Append(ctx context.Context, p int32, recs []agent.ChangelogRecord) (int64, error) {
	cl, err := c.producer(ctx)
	if err != nil {
		return 0, err
	}
	krs := make([]*kgo.Record, len(recs))
	for i := range recs {
		krs[i] = &kgo.Record{Topic: c.topic, Partition: p, Key: recs[i].Key, Value: recs[i].Value}
	}
	res := cl.ProduceSync(ctx, krs...)
	if err := res.FirstErr(); err != nil {
		return 0, fmt.Errorf("kafka changelog %q[%d]: append: %w", c.topic, p, err)
	}
	var next int64
	for _, r := range res {
		next = max(next, r.Record.Offset+1)
	}
	return next, nil
}

// Read reads partition p from from to the end it finds first (the last
// stable offset: records of transactions still open or aborted are not
// state), with a client of its own.
func (c *changelog) Read(ctx context.Context, p int32, from int64, fn func(key, value []byte) error, progress func(at, end int64)) (int64, error) {
	prod, err := c.producer(ctx) // checks the topic; its client asks for the end
	if err != nil {
		return from, err
	}
	start, end, err := c.bounds(ctx, prod, p)
	if err != nil {
		return from, err
	}
	// Compaction or retention may have removed the offsets before start:
	// what is left of them is from start on.
	from = max(from, start)
	if from >= end {
		return max(from, end), nil
	}
	opts, err := c.s.connOpts("-changelog-reader")
	if err != nil {
		return from, agent.Permanent(fmt.Errorf("kafka changelog %q: %w", c.topic, err))
	}
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{c.topic: {p: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records (the markers of transactions) come too, so
		// that the offsets read reach the end exactly.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(c.s.cfg.FetchMaxWait),
		kgo.FetchMaxBytes(int32(c.s.cfg.FetchMaxBytes)),
		kgo.FetchMaxPartitionBytes(int32(c.s.cfg.FetchMaxPartitionBytes)),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return from, agent.Permanent(fmt.Errorf("kafka changelog %q: %w", c.topic, err))
	}
	defer cl.Close()
	at := from
	last := time.Now()
	for at < end {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return at, fmt.Errorf("kafka changelog %q[%d]: read: %w", c.topic, p, ctx.Err())
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			return at, fmt.Errorf("kafka changelog %q[%d]: read: %w", c.topic, p, ferr)
		}
		var aerr error
		fs.EachRecord(func(r *kgo.Record) {
			if aerr != nil || r.Offset < at || r.Offset >= end {
				return
			}
			at = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			aerr = fn(r.Key, r.Value)
		})
		if aerr != nil {
			return at, aerr
		}
		if progress != nil && time.Since(last) >= time.Second {
			last = time.Now()
			progress(at, end)
		}
	}
	return at, nil
}

// bounds returns partition p's first offset and its end (last stable
// offset).
func (c *changelog) bounds(ctx context.Context, cl *kgo.Client, p int32) (start, end int64, err error) {
	for i, ts := range []int64{-2, -1} {
		req := kmsg.NewPtrListOffsetsRequest()
		req.IsolationLevel = 1 // read committed: the last stable offset
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = c.topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, ts
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, 0, fmt.Errorf("kafka changelog %q[%d]: list offsets: %w", c.topic, p, err)
		}
		off := int64(-1)
		for _, t := range resp.Topics {
			for _, rp := range t.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return 0, 0, fmt.Errorf("kafka changelog %q[%d]: list offsets: %w", c.topic, p, err)
				}
				off = rp.Offset
			}
		}
		if off < 0 {
			return 0, 0, fmt.Errorf("kafka changelog %q[%d]: list offsets: no answer for the partition", c.topic, p)
		}
		if i == 0 {
			start = off
		} else {
			end = off
		}
	}
	return start, end, nil
}

// Close closes the producer.
func (c *changelog) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prod != nil {
		c.prod.Close()
		c.prod = nil
	}
}

var _ agent.ChangelogSource = (*Source)(nil)
