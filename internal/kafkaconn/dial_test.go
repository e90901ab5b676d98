package kafkaconn

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

type traffic struct {
	mu            sync.Mutex
	reads, writes int
	errs          []error
}

func (t *traffic) ReadNow()  { t.mu.Lock(); t.reads++; t.mu.Unlock() }
func (t *traffic) WroteNow() { t.mu.Lock(); t.writes++; t.mu.Unlock() }
func (t *traffic) Failed(err error) {
	t.mu.Lock()
	t.errs = append(t.errs, err)
	t.mu.Unlock()
}

// TestDialerReportsTraffic: a large write is reported chunk by chunk, a
// read as it arrives, a refused dial as a failure, and a dial cut short by
// its context not at all.
func TestDialerReportsTraffic(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.CopyN(io.Discard, c, 100<<10)
		c.Write([]byte("ok"))
	}()
	tr := &traffic{}
	dial := Dialer(tr, 5*time.Second, nil)
	c, err := dial(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.Write(make([]byte, 100<<10)); err != nil || n != 100<<10 {
		t.Fatalf("write: %d, %v", n, err)
	}
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	if tr.writes < (100<<10)/writeChunk || tr.reads < 1 || len(tr.errs) != 0 {
		t.Errorf("writes %d (want >= %d), reads %d (want >= 1), errors %v (want none)", tr.writes, (100<<10)/writeChunk, tr.reads, tr.errs)
	}
	tr.mu.Unlock()

	addr := l.Addr().String()
	l.Close()
	if _, err := dial(context.Background(), "tcp", addr); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dial(ctx, "tcp", addr); err == nil {
		t.Fatal("dial with an ended context succeeded")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.errs) != 1 {
		t.Errorf("%d failures reported, want 1 (the refused dial, not the cancelled one): %v", len(tr.errs), tr.errs)
	}
}
