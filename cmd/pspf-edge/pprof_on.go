//go:build pprof

package main

import (
	"net/http"
	"net/http/pprof"
)

// addProfiling serves net/http/pprof under /debug/pprof/ on the admin API.
// Only in binaries built with -tags pprof (profiling the agent under load,
// see internal/e2ebench); release binaries do not carry it.
func addProfiling(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// disableMemProfile keeps the runtime's allocation sampling: the heap
// profile is served under /debug/pprof/heap.
func disableMemProfile() {}
