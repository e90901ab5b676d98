package mqttc

import (
	"syscall"
	"testing"
	"time"
)

// TestPauseRaisesLowat checks that a read pause raises the socket's
// receive low-water mark, so that messages arriving meanwhile do not each
// wake the network poller, and sets it back to 1 when the pause ends (a
// request ends it here), so that the next message is read as it comes.
func TestPauseRaisesLowat(t *testing.T) {
	c, srv := dialTest(t)
	bc := c.(*bufConn)
	get := func() int {
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
	if got := get(); got != 1 {
		t.Fatalf("low-water mark before the pause %d, want 1", got)
	}
	done := make(chan struct{})
	go func() {
		bc.pause(time.Minute)
		close(done)
	}()
	for deadline := time.Now().Add(10 * time.Second); get() != pauseLowat; {
		if time.Now().After(deadline) {
			t.Fatalf("low-water mark during the pause %d, want %d", get(), pauseLowat)
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
