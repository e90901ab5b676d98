package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// prSetTimerSlack and prGetTimerSlack are prctl's PR_SET_TIMERSLACK and
// PR_GET_TIMERSLACK.
const (
	prSetTimerSlack = 29
	prGetTimerSlack = 30
)

// timerSlackExecEnv marks the process the agent executed again to take its
// timer slack: that process never executes itself again, whatever it finds.
const timerSlackExecEnv = "PSPF_EDGE_TIMER_SLACK_EXEC"

// timerSlackOS is what adoptTimerSlack asks of the system; tests give one
// that records instead of executing.
type timerSlackOS struct {
	get  func() (time.Duration, error) // this thread's slack
	set  func(time.Duration) error     // this thread's slack
	exec func(env []string) error      // this program again, same arguments, env as given; returns only on failure
}

// realTimerSlackOS is timerSlackOS on the running process.
func realTimerSlackOS() timerSlackOS {
	return timerSlackOS{
		get: func() (time.Duration, error) {
			ns, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
			if errno != 0 {
				return 0, errno
			}
			return time.Duration(ns), nil
		},
		set: func(d time.Duration) error {
			if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, uintptr(d.Nanoseconds()), 0); errno != 0 {
				return errno
			}
			return nil
		},
		exec: func(env []string) error {
			// /proc/self/exe is this very file, even if a package upgrade
			// replaced the one at the path since the start.
			return syscall.Exec("/proc/self/exe", os.Args, env)
		},
	}
}

// adoptTimerSlack gives every thread of the agent the timer slack want (the
// agent file's timer_slack): how late the kernel may end a thread's timed
// sleep to end it together with other wake-ups. The Go runtime's monitor
// thread sleeps 20 µs at a time while any goroutine runs or waits in a
// system call; each of those sleeps is a wake-up of its own, with the
// kernel's default slack of 50 µs. At low rates that was a sixth of the
// agent's CPU (README, "CPU per record at low rates"). A thread's slack is
// its own, set by itself, and a new thread starts with its creator's: the
// monitor thread is created before any of the agent's code runs, so the
// agent sets the slack on its thread and executes itself again (same
// process id, arguments and environment, plus timerSlackExecEnv), and the
// new program's threads all start with it. When the process already has
// the slack (systemd's TimerSlackNSec, as the packaged unit sets, or the
// second start), nothing happens; want 0 leaves the slack as the agent
// found it. It returns only if it did not execute, with an error when the
// slack could not be had (the agent runs on with the slack it has).
func adoptTimerSlack(want time.Duration, environ []string, sys timerSlackOS) error {
	if want <= 0 {
		return nil
	}
	// The goroutine's thread is the one that executes; its slack is the
	// new program's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	have, err := sys.get()
	if err != nil {
		return fmt.Errorf("timer slack: read: %w", err)
	}
	if have == want {
		return nil
	}
	if slices.ContainsFunc(environ, func(kv string) bool { return strings.HasPrefix(kv, timerSlackExecEnv+"=") }) {
		return fmt.Errorf("timer slack: %v after executing again for %v", have, want)
	}
	if err := sys.set(want); err != nil {
		return fmt.Errorf("timer slack: set %v: %w", want, err)
	}
	env := append(append(make([]string, 0, len(environ)+1), environ...), timerSlackExecEnv+"="+strconv.FormatInt(want.Nanoseconds(), 10))
	err = sys.exec(env)
	// Still here: the agent goes on as it was.
	sys.set(have)
	return fmt.Errorf("timer slack: execute again: %w", err)
}
