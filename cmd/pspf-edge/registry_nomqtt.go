//go:build no_mqtt

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addMQTT adds nothing: this binary was built with -tags no_mqtt.
func addMQTT(*runner.Registry) {}
