//go:build no_kafka

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addKafka adds nothing: this binary was built with -tags no_kafka,
// without the Kafka source and sink.
func addKafka(*runner.Registry) {}

// atLeastOnce returns conf as it is: there is no Kafka sink.
func atLeastOnce(conf any) (any, bool) { return conf, false }
