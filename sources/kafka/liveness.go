package kafka

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// liveness tracks the traffic between the client and the brokers, to tell
// a cluster that went away from one that is merely quiet. A consumer is
// never quiet for long while it has room: a broker answers every fetch
// within fetch_max_wait, records or not, and a group member heartbeats.
// So the brokers count as unreachable when nothing was read from any of
// them for unreachable_after and either connections have been failing
// (refused, reset, a failed TLS handshake) for as long, or a request has
// waited that long for its answer (a broker that hangs, packets
// black-holed). A source that stopped fetching (the pipeline holds its
// in-flight budget) sends nothing and so waits for nothing: it is not
// reported. The connections of every client of the source share it.
type liveness struct {
	read    atomic.Int64          // unix nanos of the last byte read
	pending atomic.Int64          // unix nanos of the first write since the last read; 0: none
	errAt   atomic.Int64          // unix nanos of the first connection error since the last read; 0: none
	err     atomic.Pointer[error] // the last connection error since the last read
}

// ReadNow records bytes read from a broker (kafkaconn.Traffic).
func (l *liveness) ReadNow() {
	l.read.Store(time.Now().UnixNano())
	if l.pending.Load() != 0 {
		l.pending.Store(0)
	}
	if l.errAt.Load() != 0 {
		l.errAt.Store(0)
		l.err.Store(nil)
	}
}

// WroteNow records bytes written to a broker (kafkaconn.Traffic).
func (l *liveness) WroteNow() { l.pending.CompareAndSwap(0, time.Now().UnixNano()) }

// Failed records a connection error (kafkaconn.Traffic).
func (l *liveness) Failed(err error) {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		// franz-go closing its own connections, or a broker closing an
		// idle one, says nothing; a broker that went away also refuses
		// the next dial.
		return
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// franz-go's own deadline on a request: the request waits
		// unanswered, which pending already counts.
		return
	}
	l.errAt.CompareAndSwap(0, time.Now().UnixNano())
	l.err.Store(&err)
}

// reset starts afresh, as if the brokers had just answered: a new client.
func (l *liveness) reset() {
	l.ReadNow()
}

// unreachable reports whether the brokers have been silent for at least
// after (see liveness), and the last connection error since the last
// read, if any.
func (l *liveness) unreachable(after time.Duration) (bool, error) {
	now := time.Now().UnixNano()
	if now-l.read.Load() < int64(after) {
		return false, nil
	}
	failing := l.errAt.Load() != 0 && now-l.errAt.Load() >= int64(after)
	waiting := l.pending.Load() != 0 && now-l.pending.Load() >= int64(after)
	if !failing && !waiting {
		return false, nil
	}
	if e := l.err.Load(); e != nil {
		return true, *e
	}
	return true, nil
}
