package mqttc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// dialTest opens a bufConn to a fresh loopback listener and returns it
// with the accepted server side.
func dialTest(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	u, _ := url.Parse("tcp://" + l.Addr().String())
	c, err := openConn(u, nil, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); srv.Close() })
	return c, srv
}

// TestBufConnWrites checks that gathered writes arrive complete and in
// order, that Close sends what is pending, and that reads pass through.
func TestBufConnWrites(t *testing.T) {
	c, srv := dialTest(t)
	var want, got bytes.Buffer
	for i := range 5000 {
		p := []byte{0x40, 0x02, byte(i >> 8), byte(i)} // PUBACKs
		want.Write(p)
		if n, err := c.Write(p); n != 4 || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		if i == 2500 { // one send happens in between: the peer gets bytes before the rest is written
			srv.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64<<10)
			n, err := srv.Read(buf)
			if err != nil {
				t.Fatalf("no send of the first writes: %v", err)
			}
			got.Write(buf[:n])
			srv.SetReadDeadline(time.Time{})
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := got.ReadFrom(srv); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want the %d written, in order", got.Len(), want.Len())
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v, want net.ErrClosed", err)
	}
}

func TestBufConnReads(t *testing.T) {
	c, srv := dialTest(t)
	msg := bytes.Repeat([]byte("0123456789"), 5000)
	go func() { srv.Write(msg); srv.Close() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, %v; want the %d sent", len(got), err, len(msg))
	}
}

// TestBufConnCloseStuckPeer checks that Close returns when the peer reads
// nothing and the pending bytes cannot be sent.
func TestBufConnCloseStuckPeer(t *testing.T) {
	c, _ := dialTest(t)
	chunk := make([]byte, 1<<20)
	for range 16 { // more than the socket buffers hold
		if _, err := c.Write(chunk); err != nil {
			break
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a peer that reads nothing")
	}
}

// TestGatherReaderWaitsAfterSmallReads checks that a read waits readGather
// only after a read that filled less than half of its buffer and found its
// data within readGather.
func TestGatherReaderWaitsAfterSmallReads(t *testing.T) {
	var slept []time.Duration
	var clock time.Time
	// The read of 5 bytes takes a millisecond: its data came late.
	src := &chunkReader{chunks: []int{10, 100, 60, 5, 10, 0}, took: map[int]time.Duration{5: time.Millisecond}, clock: &clock}
	g := &gatherReader{c: src, sleep: func(d time.Duration) { slept = append(slept, d) }, now: func() time.Time { return clock }}
	buf := make([]byte, 100)
	var waits []bool
	for {
		before := len(slept)
		_, err := g.Read(buf)
		waits = append(waits, len(slept) > before)
		if err != nil {
			break
		}
	}
	// 10 of 100 is small: the second read waits; 100 is full: the third
	// does not; 60 is over half: the fourth does not; 5 is small but came
	// late: the fifth does not; 10 is small and quick: the sixth waits.
	if want := []bool{false, true, false, false, false, true}; !slices.Equal(waits, want) {
		t.Errorf("waited before reads %v, want %v", waits, want)
	}
	for _, d := range slept {
		if d != readGather {
			t.Errorf("waited %v, want %v", d, readGather)
		}
	}
}

// chunkReader returns reads of the given sizes, then io.EOF; a read of a
// size in took advances clock by that much.
type chunkReader struct {
	chunks []int
	took   map[int]time.Duration
	clock  *time.Time
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 || c.chunks[0] == 0 {
		return 0, io.EOF
	}
	n := min(c.chunks[0], len(p))
	*c.clock = c.clock.Add(c.took[n])
	c.chunks = c.chunks[1:]
	return n, nil
}

// TestBufConnCloseWhileSendingWebsocket closes websocket connections while
// their sender writes: Close must not touch the websocket's write state
// concurrently with a write (the race detector watches), and must return.
func TestBufConnCloseWhileSendingWebsocket(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	u, _ := url.Parse("ws" + strings.TrimPrefix(srv.URL, "http"))
	for i := range 100 {
		c, err := openConn(u, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		writing := make(chan struct{})
		var writes atomic.Int32
		go func() {
			defer close(writing)
			p := make([]byte, 512)
			for {
				if _, err := c.Write(p); err != nil {
					return
				}
				writes.Add(1)
				runtime.Gosched()
			}
		}()
		// Close at varying points of the sends: after 0 to 90 writes.
		for n := int32(i%10) * 10; writes.Load() < n; {
			select {
			case <-writing:
				t.Fatalf("the writer stopped after %d writes, want %d before Close", writes.Load(), n)
			default:
				runtime.Gosched()
			}
		}
		_ = c.Close()
		<-writing
	}
}

// TestPauseFor checks the length of a read pause: linger while the
// messages expected meanwhile, at the last burst's rate, fit in the room
// the broker's window leaves; shorter when they would not; none without
// room.
func TestPauseFor(t *testing.T) {
	const pace = 100 * time.Millisecond
	ms := int64(time.Millisecond)
	for _, tc := range []struct {
		name        string
		room, n, el int64
		known       bool
		want        time.Duration
	}{
		{"first burst", 500, 10, 0, false, pace},
		{"100/s in a window of 500", 500, 10, 100 * ms, true, pace},
		{"exactly fills", 500, 500, 100 * ms, true, pace},
		{"2,000/s, 1 s linger scale", 500, 200, 10 * ms, true, 25 * time.Millisecond},
		{"little room", 10, 100, 100 * ms, true, 10 * time.Millisecond},
		{"no room", 0, 10, 100 * ms, true, 0},
		{"window overdrawn", -5, 10, 100 * ms, true, 0},
		{"a week idle", 500, 1, 7 * 24 * 3600 * 1000 * ms, true, pace},
		{"huge burst", 1, 1 << 40, 1, true, 0},
	} {
		if got := pauseFor(pace, tc.room, tc.n, tc.el, tc.known); got != tc.want {
			t.Errorf("%s: pauseFor(%v, room %d, %d in %dns) = %v, want %v", tc.name, pace, tc.room, tc.n, tc.el, got, tc.want)
		}
	}
}

// TestPauseMark checks a pause's low-water mark: twice the bytes the pause
// brings at the rate of the reads since the previous pause began, within
// its bounds.
func TestPauseMark(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int64
		el, d time.Duration
		want  int
	}{
		{"100 msg/s of 230 B, pause 1 s", 23000, time.Second, time.Second, 46000},
		{"2,000 msg/s, pause 250 ms", 460000 / 4, 250 * time.Millisecond, 250 * time.Millisecond, 230000},
		{"a shorter pause than the last", 46000, time.Second, 500 * time.Millisecond, 46000},
		{"little data", 100, time.Second, time.Second, minPauseLowat},
		{"nothing read yet", 0, time.Second, time.Second, minPauseLowat},
		{"no time elapsed", 1000, 0, time.Second, minPauseLowat},
		{"a flood", 100 << 20, time.Second, time.Second, maxPauseLowat},
		{"a huge rate does not overflow", 1 << 62, time.Nanosecond, time.Second, maxPauseLowat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pauseMark(tc.n, tc.el, tc.d); got != tc.want {
				t.Errorf("pauseMark(%d, %s, %s) = %d, want %d", tc.n, tc.el, tc.d, got, tc.want)
			}
		})
	}
}
