//go:build no_serial

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addSerial adds nothing: this binary was built with -tags no_serial.
func addSerial(*runner.Registry) {}
