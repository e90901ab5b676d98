//go:build !no_serial

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sources/serial"
)

// addSerial registers the serial source (and go.bug.st/serial); build with -tags no_serial to leave it out of the binary.
func addSerial(r *runner.Registry) {
	r.Sources["serial"] = serial.Factory()
}
