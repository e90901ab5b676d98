//go:build no_gpio

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addGPIO adds nothing: this binary was built with -tags no_gpio.
func addGPIO(*runner.Registry) {}
