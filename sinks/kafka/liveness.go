package kafka

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// liveness tracks the traffic between the client and the brokers: when a
// byte was last read from one, when one was last written, and the last
// connection error since the last read. It tells a cluster that went away
// (connections refused or reset, requests unanswered) from one that is slow
// or merely quiet: a slow uplink still moves bytes, a loaded broker still
// answers, and franz-go waiting between metadata loads (for a topic that is
// not there yet) has had its answers. It is shared by every connection of
// the sink's clients.
type liveness struct {
	read  atomic.Int64          // unix nanos of the last byte read
	wrote atomic.Int64          // unix nanos of the last byte written
	err   atomic.Pointer[error] // the last dial or connection error since the last read
}

// ReadNow records bytes read from a broker (kafkaconn.Traffic).
func (l *liveness) ReadNow() {
	l.read.Store(time.Now().UnixNano())
	if l.err.Load() != nil {
		l.err.Store(nil)
	}
}

// WroteNow records bytes written to a broker (kafkaconn.Traffic).
func (l *liveness) WroteNow() { l.wrote.Store(time.Now().UnixNano()) }

// Failed records a connection error (kafkaconn.Traffic).
func (l *liveness) Failed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return // franz-go's own deadlines and closes say nothing new
	}
	l.err.Store(&err)
}

// unreachable reports whether, for a wait that began at start, the cluster
// has been silent for at least after: nothing read for that long, and
// either a connection failed since the last read (refused, reset, a
// handshake that failed) or a request was written after the last read and
// nothing was written since (unanswered: a broker that hangs, packets that
// are black-holed). cause is the connection error, if any.
func (l *liveness) unreachable(start time.Time, after time.Duration) (bool, error) {
	now := time.Now()
	if now.Sub(start) < after {
		return false, nil
	}
	read, wrote := time.Unix(0, l.read.Load()), time.Unix(0, l.wrote.Load())
	if now.Sub(read) < after {
		return false, nil
	}
	if e := l.err.Load(); e != nil {
		return true, *e
	}
	return wrote.After(read) && now.Sub(wrote) >= after, nil
}

// lastErr returns the last connection error since the last read, or nil.
func (l *liveness) lastErr() error {
	if e := l.err.Load(); e != nil {
		return *e
	}
	return nil
}
