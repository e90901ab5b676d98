package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// listenNotify listens like systemd does for sd_notify datagrams and returns
// the socket's address.
func listenNotify(t *testing.T, abstract bool) (*net.UnixConn, string) {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		addr = fmt.Sprintf("@pspf-edge-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, addr
}

func readNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySystemd(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			conn, addr := listenNotify(t, abstract)
			t.Setenv("NOTIFY_SOCKET", addr)
			for _, state := range []string{"READY=1", "STOPPING=1"} {
				if err := notifySystemd(state); err != nil {
					t.Fatal(err)
				}
				if got := readNotify(t, conn); got != state {
					t.Errorf("got %q, want %q", got, state)
				}
			}
			if err := notifySystemd("RELOADING=1"); err != nil {
				t.Fatal(err)
			}
			got := readNotify(t, conn)
			usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
			if !ok {
				t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC", got)
			}
			if n, err := strconv.ParseInt(usec, 10, 64); err != nil || n <= 0 {
				t.Errorf("got MONOTONIC_USEC %q, want a positive number", usec)
			}
		})
	}
}

func TestNotifySystemdOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := notifySystemd("READY=1"); err != nil {
		t.Errorf("got %v, want nil without NOTIFY_SOCKET", err)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if err := notifySystemd("READY=1"); err == nil {
		t.Error("got nil, want an error for a vsock address")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := notifySystemd("READY=1"); err == nil {
		t.Error("got nil, want an error for a socket nobody listens on")
	}
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 15 * time.Second},
		{"30000000", "42", 15 * time.Second},
		{"30000000", "43", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"abc", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.usec+"/"+tt.pid, func(t *testing.T) {
			if got := watchdogInterval(tt.usec, tt.pid, 42); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRunWatchdog(t *testing.T) {
	conn, addr := listenNotify(t, false)
	t.Setenv("NOTIFY_SOCKET", addr)
	t.Setenv("WATCHDOG_USEC", "40000") // a ping every 20ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); runWatchdog(ctx) }()
	for range 3 {
		if got := readNotify(t, conn); got != "WATCHDOG=1" {
			t.Errorf("got %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("runWatchdog did not return after cancel")
	}
}

func TestRunWatchdogDisabled(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	done := make(chan struct{})
	go func() { defer close(done); runWatchdog(t.Context()) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("runWatchdog without WATCHDOG_USEC did not return at once")
	}
}

func TestJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  string
		w    any
		want bool
	}{
		{"matching stream", fmt.Sprintf("%d:%d", st.Dev, st.Ino), f, true},
		{"unset", "", f, false},
		{"other inode", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), f, false},
		{"not a file", fmt.Sprintf("%d:%d", st.Dev, st.Ino), &strings.Builder{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.env)
			if got := journalStream(tt.w); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRunSystemd(t *testing.T) {
	conn, addr := listenNotify(t, false)
	t.Setenv("NOTIFY_SOCKET", addr)
	t.Setenv("WATCHDOG_USEC", "")
	var ready atomic.Bool
	ctx, cancel := context.WithCancel(t.Context())
	stop := runSystemd(ctx, ready.Load)
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("got a message of %d bytes before ready, want none", n)
	}
	ready.Store(true)
	if got := readNotify(t, conn); got != "READY=1" {
		t.Errorf("got %q, want READY=1", got)
	}
	cancel()
	if got := readNotify(t, conn); got != "STOPPING=1" {
		t.Errorf("got %q, want STOPPING=1", got)
	}
	stop()
}

func TestRunSystemdOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	stop := runSystemd(t.Context(), func() bool { return true })
	stop()
}
