//go:build !pprof

package main

import (
	"runtime"
	"testing"
)

func TestDisableMemProfile(t *testing.T) {
	prev := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = prev })
	runtime.MemProfileRate = 512 << 10
	disableMemProfile()
	if runtime.MemProfileRate != 0 {
		t.Errorf("got MemProfileRate %d, want 0 without -tags pprof", runtime.MemProfileRate)
	}
}
