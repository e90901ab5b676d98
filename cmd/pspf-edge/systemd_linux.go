package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The service manager protocol of sd_notify(3), written out so that the agent
// needs no library for it: one datagram per state change, sent to the unix
// socket systemd names in NOTIFY_SOCKET. Outside systemd (NOTIFY_SOCKET unset)
// every call is a no-op.

// notifySystemd sends state ("READY=1", "STOPPING=1", "RELOADING=1",
// "WATCHDOG=1", "STATUS=...") to the service manager. RELOADING=1 gets the
// MONOTONIC_USEC field that systemd 253 and later ask for. A failed send is
// returned but is never a reason to stop the agent: callers may ignore it.
func notifySystemd(state string) error {
	return notifySocket(os.Getenv("NOTIFY_SOCKET"), state)
}

func notifySocket(addr, state string) error {
	if addr == "" {
		return nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		// systemd also allows vsock addresses, which an agent on a board
		// never gets; say so rather than guess.
		return fmt.Errorf("systemd notify: unsupported NOTIFY_SOCKET %q", addr)
	}
	if state == "RELOADING=1" {
		if ts, err := monotonicNow(); err == nil {
			state += "\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
		}
	}
	// A leading @ is an abstract socket; Go's resolver maps it to the NUL
	// byte itself.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("systemd notify %q: %w", firstLine(state), err)
	}
	return nil
}

// monotonicNow reads CLOCK_MONOTONIC, the clock systemd compares
// MONOTONIC_USEC with (Go's time package does not expose its value).
func monotonicNow() (syscall.Timespec, error) {
	const clockMonotonic = 1
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return ts, errno
	}
	return ts, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// watchdogInterval is how often to send WATCHDOG=1: half of WATCHDOG_USEC, as
// sd_watchdog_enabled(3) advises, or 0 if systemd asked for no watchdog or
// asked another process (WATCHDOG_PID names a different pid).
func watchdogInterval(usec, pid string, self int) time.Duration {
	if usec == "" {
		return 0
	}
	if pid != "" && pid != strconv.Itoa(self) {
		return 0
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Microsecond / 2
}

// runWatchdog pings the systemd watchdog (WATCHDOG=1) every half
// WATCHDOG_USEC until ctx is done, and returns at once if the unit has no
// watchdog. If the agent stops calling it (the process hangs), systemd kills
// and restarts the service.
func runWatchdog(ctx context.Context) {
	every := watchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
	if every <= 0 {
		return
	}
	notifySystemd("WATCHDOG=1")
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			notifySystemd("WATCHDOG=1")
		}
	}
}

// runSystemd tells systemd how the agent is doing, if it runs under systemd
// (NOTIFY_SOCKET set): READY=1 once ready() first reports true (the first
// pass over the pipelines is done), WATCHDOG=1 pings all along, and
// STOPPING=1 when ctx is done. The pings go on while the pipelines drain,
// until the returned stop is called; stop waits for every goroutine started
// here. Outside systemd it starts nothing.
func runSystemd(ctx context.Context, ready func() bool) (stop func()) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return func() {}
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { runWatchdog(wctx) })
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for !ready() {
			select {
			case <-ctx.Done():
				notifySystemd("STOPPING=1")
				return
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
		notifySystemd("READY=1")
		select {
		case <-ctx.Done():
			notifySystemd("STOPPING=1")
		case <-wctx.Done():
		}
	})
	return func() { cancel(); wg.Wait() }
}

// journalStream reports whether w is the stream systemd connected to the
// journal: JOURNAL_STREAM holds its device and inode ("DEV:INO"). Comparing
// them, rather than only looking for the variable, keeps a child whose stderr
// was redirected (to a file, a pipe) from writing journal prefixes there.
func journalStream(w any) bool {
	env := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if env == "" || !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return env == fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino))
}
