//go:build !no_kafka && !no_kafka_source

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	kafkasource "github.com/pspf/pspf-edge/sources/kafka"
)

// addKafkaSource adds the Kafka source. A board that needs none can
// leave it, and the consumer side of franz-go, out of the binary: build with
// -tags no_kafka_source (the sink stays) or no_kafka (both go).
func addKafkaSource(r *runner.Registry) { r.Sources["kafka"] = kafkasource.Factory() }
