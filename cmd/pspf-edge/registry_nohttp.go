//go:build no_http

package main

import "github.com/pspf/pspf-edge/agent/runner"

// addHTTP adds nothing: this binary was built with -tags no_http.
func addHTTP(*runner.Registry) {}
