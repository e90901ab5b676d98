//go:build no_kafka

package main

import (
	"context"
	"time"

	"github.com/pspf/pspf-edge/agent/fleet"
)

// kafkaBeats reads nothing: this binary was built with -tags no_kafka, and
// has no Kafka sink whose heartbeats it could read.
func kafkaBeats(context.Context, any, time.Duration) ([]fleet.Heartbeat, bool, error) {
	return nil, false, nil
}
