//go:build !no_gpio

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sources/gpio"
)

// addGPIO registers the GPIO source (and periph.io); build with -tags no_gpio to leave it out of the binary.
func addGPIO(r *runner.Registry) {
	r.Sources["gpio"] = gpio.Factory()
}
