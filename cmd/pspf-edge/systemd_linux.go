package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// The service manager protocol of sd_notify(3), written out so that the agent
// needs no library for it: one datagram per state change, sent to the unix
// socket systemd names in NOTIFY_SOCKET. Outside systemd (NOTIFY_SOCKET unset)
// every call is a no-op.

// notifySocket sends state ("READY=1", "STOPPING=1", "RELOADING=1",
// "WATCHDOG=1", "STATUS=...") to the service manager listening on addr (the
// NOTIFY_SOCKET it gave); an empty addr sends nothing. RELOADING=1 gets the
// MONOTONIC_USEC field that systemd 253 and later ask for. A failed send is
// returned but is never a reason to stop the agent: callers may ignore it.
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

// systemdNotifier returns what the supervisor needs to talk to systemd: a
// function that sends a state, and how often to send WATCHDOG=1 (0: never).
// Outside systemd (NOTIFY_SOCKET unset) it returns nil and 0. A failed send
// is logged (a watchdog ping's at debug level: it repeats) and otherwise
// ignored.
func systemdNotifier(logger *slog.Logger) (notify func(state string), watchdog time.Duration) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, 0
	}
	watchdog = watchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
	return func(state string) {
		if err := notifySocket(addr, state); err != nil {
			level := slog.LevelWarn
			if state == "WATCHDOG=1" {
				level = slog.LevelDebug
			}
			logger.Log(context.Background(), level, "systemd notify failed", "err", err)
		}
	}, watchdog
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
