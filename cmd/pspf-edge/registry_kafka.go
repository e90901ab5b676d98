//go:build !no_kafka

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sinks/kafka"
)

// addKafka registers the Kafka sink (and the source, see addKafkaSource);
// build with -tags no_kafka to leave both, and franz-go, out of the binary.
func addKafka(r *runner.Registry) {
	r.Sinks["kafka"] = kafka.Factory()
	addKafkaSource(r)
}

// atLeastOnce returns the config of a Kafka sink with exactly_once
// delivery as at_least_once, and reports whether it changed it; any other
// config is returned as it is.
func atLeastOnce(conf any) (any, bool) {
	kc, ok := conf.(*kafka.Config)
	if !ok || kc.Delivery != "exactly_once" {
		return conf, false
	}
	c := *kc
	c.Delivery = "at_least_once"
	return &c, true
}
