//go:build !no_mqtt

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	mqttsink "github.com/pspf/pspf-edge/sinks/mqtt"
	"github.com/pspf/pspf-edge/sources/mqtt"
)

// addMQTT registers the MQTT source and sink; build with -tags no_mqtt to leave it out of the binary.
func addMQTT(r *runner.Registry) {
	r.Sources["mqtt"] = mqtt.Factory()
	r.Sinks["mqtt"] = mqttsink.Factory()
}
