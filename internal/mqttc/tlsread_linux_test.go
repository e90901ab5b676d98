package mqttc

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// TestPauseRaisesLowatTLS checks that over TLS the read pause raises the
// receive low-water mark of the TCP socket under crypto/tls, as over
// TCP (TestPauseRaisesLowat), sets it back to 1 when a request ends the
// pause, and that a message sent during the pause is read after it.
func TestPauseRaisesLowatTLS(t *testing.T) {
	hs := httptest.NewUnstartedServer(nil)
	hs.StartTLS() // for its certificate, valid for 127.0.0.1
	t.Cleanup(hs.Close)
	l, err := tls.Listen("tcp", "127.0.0.1:0", hs.TLS)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			close(accepted)
			return
		}
		accepted <- tc
	}()
	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate())
	u, _ := url.Parse("ssl://" + l.Addr().String())
	bc, err := openConn(u, &tls.Config{RootCAs: roots}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept or handshake failed")
	}
	t.Cleanup(func() { bc.Close(); srv.Close() })
	if bc.lowat.rc == nil {
		t.Fatal("no socket under the TLS connection to set the low-water mark on")
	}
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
	if _, err := srv.Write([]byte{typePingresp << 4, 0}); err != nil {
		t.Fatal(err)
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
	_ = bc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := bc.Read(buf); err != nil || buf[0] != typePingresp<<4 {
		t.Fatalf("read after the pause: %x %v", buf, err)
	}
	// The next pause's mark counts the socket's bytes (ciphertext), not
	// the plaintext: 2 bytes came in a record of 20 or more.
	if r := bc.g.read; r < 20 || r != bc.g.rec.read {
		t.Errorf("bytes counted for the mark %d, want the socket's, %d (at least 20)", r, bc.g.rec.read)
	}
}
