//go:build !pprof

package main

import "net/http"

// addProfiling does nothing: build with -tags pprof to serve
// /debug/pprof/ on the admin API.
func addProfiling(*http.ServeMux) {}
