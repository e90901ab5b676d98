//go:build !linux

package window

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }

func lockThread() func() { return func() {} }

func processCPU() (time.Duration, bool) { return 0, false }
