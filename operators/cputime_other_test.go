//go:build !linux

package operators_test

import "time"

// threadCPU is not available here: only wall time is reported.
func threadCPU() (time.Duration, bool) { return 0, false }

func lockThread() func() { return func() {} }
