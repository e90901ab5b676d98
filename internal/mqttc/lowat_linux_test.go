package mqttc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPauseRaisesLowat checks that a read pause raises the socket's
// receive low-water mark, so that messages arriving meanwhile do not each
// wake the network poller, and sets it back to 1 when the pause ends (a
// request ends it here), so that the next message is read as it comes.
func TestPauseRaisesLowat(t *testing.T) {
	c, srv := dialTest(t)
	bc := c.(*bufConn)
	get := func() int { return lowatOf(t, bc) }
	if got := get(); got != 1 {
		t.Fatalf("low-water mark before the pause %d, want 1", got)
	}
	done := make(chan struct{})
	go func() {
		bc.pause(time.Minute)
		close(done)
	}()
	for deadline := time.Now().Add(10 * time.Second); get() != minPauseLowat; { // nothing read yet
		if time.Now().After(deadline) {
			t.Fatalf("low-water mark during the pause %d, want %d", get(), minPauseLowat)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := srv.Write([]byte{typePingresp << 4, 0}); err != nil { // data alone does not end it
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("data in the socket ended the pause")
	case <-time.After(50 * time.Millisecond): // not a synchronisation: a chance to end it wrongly
	}
	bc.ask()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a request did not end the pause")
	}
	if got := get(); got != 1 {
		t.Fatalf("low-water mark after the pause %d, want 1", got)
	}
	buf := make([]byte, 2)
	if _, err := bc.Read(buf); err != nil || buf[0] != typePingresp<<4 {
		t.Fatalf("read after the pause: %x %v", buf, err)
	}
}

// TestPauseMarkHoldsForThePause counts the socket's wake-ups of a poller
// (an edge-triggered epoll of the test's own, woken as the runtime's is)
// while a pause lets messages gather: as many bytes as the last minute of
// reads brought arrive during a pause of a minute, one segment at a time,
// and none of them wakes the poller. A mark of a fixed 8 KiB let every
// segment after the first 8 KiB wake it (64 of these 100). The pause then
// ends on a request and the reader gets every byte.
func TestPauseMarkHoldsForThePause(t *testing.T) {
	c, srv := dialTest(t)
	bc := c.(*bufConn)
	const seg, segs = 230, 100 // a 100 msg/s stream, four messages a segment: the bench's
	if tc, ok := srv.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	var fd int
	if err := bc.lowat.rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	inq := func() int {
		t.Helper()
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			t.Fatalf("SIOCINQ: %v", err)
		}
		return n
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		t.Fatal(err)
	}
	wakes := func() int {
		t.Helper()
		ev := make([]unix.EpollEvent, 1)
		n, err := unix.EpollWait(ep, ev, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("epoll_wait: %v", err)
		}
		return n
	}

	// The last minute of reads: segs segments' worth of bytes.
	base := time.Now()
	var adv atomic.Int64
	bc.g.now = func() time.Time { return base.Add(time.Duration(adv.Load())) }
	msg := bytes.Repeat([]byte{'m'}, seg)
	if _, err := srv.Write(bytes.Repeat(msg, segs)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(bc, make([]byte, seg*segs)); err != nil {
		t.Fatal(err)
	}
	adv.Store(int64(time.Minute))
	wakes() // what the reads left

	done := make(chan struct{})
	go func() {
		bc.pause(time.Minute)
		close(done)
	}()
	for deadline := time.Now().Add(10 * time.Second); lowatOf(t, bc) == 1; {
		if time.Now().After(deadline) {
			t.Fatal("the pause did not raise the low-water mark")
		}
		runtime.Gosched()
	}
	woken := 0
	for i := range segs {
		if _, err := srv.Write(msg); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); inq() < (i+1)*seg; {
			if time.Now().After(deadline) {
				t.Fatalf("segment %d did not arrive", i)
			}
			runtime.Gosched()
		}
		woken += wakes()
	}
	if woken != 0 {
		t.Errorf("%d of %d segments woke the poller during the pause (mark %d), want 0", woken, segs, lowatOf(t, bc))
	}
	bc.ask()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a request did not end the pause")
	}
	if _, err := io.ReadFull(bc, make([]byte, seg*segs)); err != nil {
		t.Fatalf("read after the pause: %v", err)
	}
}

// lowatOf is the socket's receive low-water mark.
func lowatOf(t *testing.T, bc *bufConn) int {
	t.Helper()
	var v int
	var gerr error
	if err := bc.lowat.rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
	}); err != nil || gerr != nil {
		t.Fatalf("getsockopt: %v %v", err, gerr)
	}
	return v
}

// TestPauseEndsWithHighMark checks that a pause whose mark nothing reaches
// still ends on its timer, and that the connection's end that came during
// it is then seen after the bytes before it.
func TestPauseEndsWithHighMark(t *testing.T) {
	c, srv := dialTest(t)
	bc := c.(*bufConn)
	base := time.Now()
	var adv atomic.Int64
	bc.g.now = func() time.Time { return base.Add(time.Duration(adv.Load())) }
	if _, err := srv.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(bc, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	adv.Store(int64(time.Millisecond)) // 64 KiB a millisecond: the mark is the largest
	if _, err := srv.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		bc.pause(time.Second)
		close(done)
	}()
	for deadline := time.Now().Add(10 * time.Second); lowatOf(t, bc) == 1; {
		if time.Now().After(deadline) {
			t.Fatal("the pause did not raise the low-water mark")
		}
		runtime.Gosched()
	}
	want := maxPauseLowat
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_rmem"); err == nil { // the kernel's cap: half its maximum
		if f := strings.Fields(string(b)); len(f) == 3 {
			if m, err := strconv.Atoi(f[2]); err == nil {
				want = min(want, m/2)
			}
		}
	}
	if got := lowatOf(t, bc); got != want {
		t.Fatalf("low-water mark %d, want %d", got, want)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pause did not end on its timer")
	}
	got, err := io.ReadAll(bc)
	if err != nil || string(got) != "last" {
		t.Fatalf("after the pause: %q, %v; want \"last\" and the end", got, err)
	}
}

// TestPauseEndsAtMark: a long pause ends once the socket holds its mark's
// bytes (a flood after a quiet spell is read then, not after the pause
// the rate estimate gave), and not before; a request (ask) and Close end
// it too. The mark of a first pause is minPauseLowat.
func TestPauseEndsAtMark(t *testing.T) {
	start := func(t *testing.T) (*bufConn, net.Conn, chan time.Duration) {
		c, srv := dialTest(t)
		bc := c.(*bufConn)
		ended := make(chan time.Duration, 1)
		go func() {
			t0 := time.Now()
			bc.pause(20 * time.Second)
			ended <- time.Since(t0)
		}()
		for deadline := time.Now().Add(10 * time.Second); lowatOf(t, bc) == 1; {
			if time.Now().After(deadline) {
				t.Fatal("the pause did not raise the low-water mark")
			}
			runtime.Gosched()
		}
		if got := lowatOf(t, bc); got != minPauseLowat {
			t.Fatalf("low-water mark %d, want %d", got, minPauseLowat)
		}
		return bc, srv, ended
	}
	waitEnd := func(t *testing.T, ended chan time.Duration, why string) {
		t.Helper()
		select {
		case d := <-ended:
			if d > 10*time.Second {
				t.Fatalf("the pause ended after %v, on its timer, not on %s", d, why)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the pause did not end on %s", why)
		}
	}

	t.Run("mark", func(t *testing.T) {
		bc, srv, ended := start(t)
		if _, err := srv.Write(make([]byte, minPauseLowat/2)); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-ended:
			t.Fatalf("the pause ended after %v with half its mark queued", d)
		case <-time.After(300 * time.Millisecond):
		}
		if _, err := srv.Write(make([]byte, minPauseLowat)); err != nil {
			t.Fatal(err)
		}
		waitEnd(t, ended, "its mark")
		if lowatOf(t, bc) != 1 {
			t.Fatal("the low-water mark was not set back after the pause")
		}
		if _, err := io.ReadFull(bc, make([]byte, minPauseLowat*3/2)); err != nil {
			t.Fatalf("reading what came during the pause: %v", err)
		}
	})
	t.Run("ask", func(t *testing.T) {
		bc, srv, ended := start(t)
		bc.ask()
		waitEnd(t, ended, "a request")
		// The pause's deadline is gone: a read waits for the answer.
		go func() {
			time.Sleep(100 * time.Millisecond)
			_, _ = srv.Write([]byte("answer"))
		}()
		if _, err := io.ReadFull(bc, make([]byte, 6)); err != nil {
			t.Fatalf("reading after an interrupted pause: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		bc, _, ended := start(t)
		go bc.Close()
		waitEnd(t, ended, "Close")
	})
}
