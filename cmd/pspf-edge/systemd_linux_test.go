package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

func TestNotifySocket(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			conn, addr := listenNotify(t, abstract)
			for _, state := range []string{"READY=1", "STOPPING=1"} {
				if err := notifySocket(addr, state); err != nil {
					t.Fatal(err)
				}
				if got := readNotify(t, conn); got != state {
					t.Errorf("got %q, want %q", got, state)
				}
			}
			if err := notifySocket(addr, "RELOADING=1"); err != nil {
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

func TestNotifySocketOutsideSystemd(t *testing.T) {
	for _, tt := range []struct {
		name, addr string
		fails      bool
	}{
		{"no NOTIFY_SOCKET", "", false},
		{"vsock address", "vsock:2:1234", true},
		{"nobody listening", filepath.Join(t.TempDir(), "nobody-listens"), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := notifySocket(tt.addr, "READY=1"); (err != nil) != tt.fails {
				t.Errorf("got %v, want an error: %v", err, tt.fails)
			}
		})
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

func TestSystemdNotifierOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "30000000")
	if notify, every := systemdNotifier(slog.New(slog.DiscardHandler)); notify != nil || every != 0 {
		t.Errorf("got a notifier and %v, want nil and 0 without NOTIFY_SOCKET", every)
	}
}

// notifications reads every datagram sent to conn into a channel.
func notifications(conn *net.UnixConn) <-chan string {
	out := make(chan string, 4096)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(out)
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

// next returns the next notification other than WATCHDOG=1, counting the
// pings it skips.
func next(t *testing.T, msgs <-chan string, pings *int) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			if m != "WATCHDOG=1" {
				return m
			}
			*pings++
		case <-deadline:
			t.Fatal("no notification within 10s")
			return ""
		}
	}
}

// Under systemd the agent says READY=1 once its pipelines run,
// RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP reload,
// pings the watchdog all along, and says STOPPING=1 on shutdown.
func TestAgentTalksToSystemd(t *testing.T) {
	conn, addr := listenNotify(t, false)
	t.Setenv("NOTIFY_SOCKET", addr)
	t.Setenv("WATCHDOG_USEC", "40000") // a ping every 20ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	msgs := notifications(conn)
	h := startAgent(t, map[string]string{"s.yaml": "sources:\n  - simulate: {format: fields, rate: 50}\nsinks:\n  - down: {}\n"}, "")
	pings := 0
	if got := next(t, msgs, &pings); got != "READY=1" {
		t.Fatalf("got %q first, want READY=1", got)
	}
	h.hup <- syscall.SIGHUP
	got := next(t, msgs, &pings)
	if usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC="); !ok {
		t.Errorf("got %q after SIGHUP, want RELOADING=1 with MONOTONIC_USEC", got)
	} else if n, err := strconv.ParseInt(usec, 10, 64); err != nil || n <= 0 {
		t.Errorf("got MONOTONIC_USEC %q, want a positive number", usec)
	}
	if got := next(t, msgs, &pings); got != "READY=1" {
		t.Errorf("got %q after the reload, want READY=1", got)
	}
	if v := h.view("s"); v.Generation != 2 {
		t.Errorf("READY=1 came before the reload was done: generation %d, want 2", v.Generation)
	}
	for range 3 {
		select {
		case got := <-msgs:
			if got != "WATCHDOG=1" {
				t.Fatalf("got %q, want only watchdog pings", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no watchdog ping within 10s")
		}
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if got := next(t, msgs, &pings); got != "STOPPING=1" {
		t.Errorf("got %q on shutdown, want STOPPING=1", got)
	}
}
