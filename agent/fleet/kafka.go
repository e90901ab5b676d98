//go:build !no_kafka

package fleet

import (
	"context"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kafkaLeftOut is the build tag that leaves the Kafka channel out: none,
// it is in this binary.
const kafkaLeftOut = ""

// kafkaChannel reads a compacted topic keyed by target from its start: the
// latest record of each key is that target's bundle, and compaction keeps
// the topic as small as the number of targets. No consumer group: every
// agent reads all of it, and keeps nothing but its own targets' bundles.
type kafkaChannel struct {
	c   KafkaConfig
	d   Deps
	out *outage
	pub *kgo.Client // Push's
}

func newKafka(c KafkaConfig, d Deps) (*kafkaChannel, error) {
	if c.Topic == "" {
		c.Topic = DefaultKafkaTopic
	}
	return &kafkaChannel{c: c, d: d, out: newOutage(d, ChannelKafka)}, nil
}

func (k *kafkaChannel) opts(extra ...kgo.Opt) ([]kgo.Opt, error) {
	o := []kgo.Opt{kgo.SeedBrokers(k.c.Brokers...), kgo.ClientID("pspf-fleet-" + k.d.Name)}
	if on, err := k.c.TLS.On(""); err != nil {
		return nil, fmt.Errorf("fleet: kafka: %w", err)
	} else if on {
		tc, err := k.c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("fleet: kafka: %w", err)
		}
		o = append(o, kgo.DialTLSConfig(tc))
	}
	return append(o, extra...), nil
}

// Run reads the topic from its start, and then follows it.
func (k *kafkaChannel) Run(ctx context.Context, targets []string, got func(string, []byte)) error {
	want := map[string]bool{}
	for _, t := range targets {
		want[t] = true
	}
	// A fetch holds one bundle at a time at most (a broker returns at
	// least one record batch whatever the bound): the default, 50 MiB,
	// is twice a gateway's whole memory budget.
	fetch := int32(MaxBundleBytes + 64<<10)
	o, err := k.opts(kgo.ConsumeTopics(k.c.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(fetch), kgo.FetchMaxPartitionBytes(fetch))
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(o...)
	if err != nil {
		return fmt.Errorf("fleet: kafka: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		failed := false
		fs.EachError(func(_ string, _ int32, err error) {
			failed = true
			k.out.fail(fmt.Errorf("fleet: kafka fetch: %w", err))
		})
		if !failed {
			k.out.ok()
		}
		fs.EachRecord(func(r *kgo.Record) {
			if t := string(r.Key); want[t] && len(r.Value) > 0 {
				got(t, r.Value)
			}
		})
	}
}

// Push produces the bundle keyed by target, acks=all; it creates the
// topic, compacted and with room for the largest bundle, if it is missing.
func (k *kafkaChannel) Push(ctx context.Context, target string, raw []byte) error {
	if k.pub == nil {
		o, err := k.opts(kgo.DefaultProduceTopic(k.c.Topic), kgo.ProducerBatchMaxBytes(MaxBundleBytes+64<<10))
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(o...)
		if err != nil {
			return fmt.Errorf("fleet: kafka: %w", err)
		}
		k.pub = cl
		if err := k.createTopic(ctx); err != nil {
			return err
		}
	}
	if err := k.pub.ProduceSync(ctx, &kgo.Record{Key: []byte(target), Value: raw}).FirstErr(); err != nil {
		return fmt.Errorf("fleet: kafka produce: %w", err)
	}
	return nil
}

func (k *kafkaChannel) createTopic(ctx context.Context) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic, t.NumPartitions, t.ReplicationFactor = k.c.Topic, 1, -1
	for name, v := range map[string]string{"cleanup.policy": "compact", "max.message.bytes": strconv.Itoa(MaxBundleBytes + 64<<10)} {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = name, kmsg.StringPtr(v)
		t.Configs = append(t.Configs, c)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, k.pub)
	if err != nil {
		return fmt.Errorf("fleet: kafka create topic %s: %w", k.c.Topic, err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && err != kerr.TopicAlreadyExists {
			return fmt.Errorf("fleet: kafka create topic %s: %w", k.c.Topic, err)
		}
	}
	return nil
}

// Close closes Push's client.
func (k *kafkaChannel) Close() {
	if k.pub != nil {
		k.pub.Close()
	}
}
