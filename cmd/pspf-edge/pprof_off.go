//go:build !pprof

package main

import (
	"net/http"
	"runtime"
)

// addProfiling does nothing: build with -tags pprof to serve
// /debug/pprof/ on the admin API.
func addProfiling(*http.ServeMux) {}

// disableMemProfile turns off the runtime's sampling of allocations: without
// -tags pprof nothing can read the heap profile, and each sample costs a
// stack unwind (touching the executable's tables, so resident memory) and
// a slot in a 1.4 MB bucket table. It must run first in main.
func disableMemProfile() { runtime.MemProfileRate = 0 }
