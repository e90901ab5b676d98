//go:build !no_kafka

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/sinks/kafka"
)

// kafkaBeats reads a Kafka heartbeat sink's topic from its start until it
// has been quiet for wait; ok is false if conf is not a Kafka sink's.
func kafkaBeats(ctx context.Context, conf any, wait time.Duration) (beats []fleet.Heartbeat, ok bool, err error) {
	c, ok := conf.(*kafka.Config)
	if !ok {
		return nil, false, nil
	}
	if strings.Contains(c.Topic, "{") {
		return nil, true, fmt.Errorf("kafka topic %q is a template: fleet status reads one topic", c.Topic)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(c.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
	if on, err := c.TLS.On(""); err == nil && on {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, true, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, true, fmt.Errorf("kafka: %w", err)
	}
	defer cl.Close()
	var out []fleet.Heartbeat
	for {
		pctx, cancel := context.WithTimeout(ctx, wait)
		fs := cl.PollFetches(pctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			var hb fleet.Heartbeat
			if json.Unmarshal(r.Value, &hb) == nil && hb.Agent != "" {
				out = append(out, hb)
			}
		})
		if n == 0 || ctx.Err() != nil {
			return out, true, nil
		}
	}
}
