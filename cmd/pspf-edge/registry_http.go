//go:build !no_http

package main

import (
	"github.com/pspf/pspf-edge/agent/runner"
	httpsink "github.com/pspf/pspf-edge/sinks/http"
)

// addHTTP registers the HTTP sink; build with -tags no_http to leave it out of the binary.
func addHTTP(r *runner.Registry) {
	r.Sinks["http"] = httpsink.Factory()
}
