//go:build no_mqtt

package main

import (
	"context"
	"time"

	"github.com/pspf/pspf-edge/agent/fleet"
)

// mqttBeats reads nothing: this binary was built with -tags no_mqtt, and
// has no MQTT sink whose heartbeats it could read.
func mqttBeats(context.Context, any, time.Duration) ([]fleet.Heartbeat, bool, error) {
	return nil, false, nil
}
