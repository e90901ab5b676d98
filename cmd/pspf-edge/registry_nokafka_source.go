//go:build !no_kafka && no_kafka_source

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addKafkaSource adds nothing: this binary was built with -tags
// no_kafka_source.
func addKafkaSource(*runner.Registry) {}
