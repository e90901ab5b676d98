package kafka

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// liveness tracks the traffic between the client and the brokers, to tell
// a cluster that went away from one that is merely quiet. A consumer is
// never quiet for long while it has room: a broker answers every fetch
// within fetch_max_wait, records or not, and a group member heartbeats.
// So the brokers count as unreachable when nothing was read from any of
// them for unreachable_after and either connections have been failing
// (refused, reset, a failed TLS handshake) for as long, or a request has
// waited that long for its answer beyond what the broker may hold it (a
// broker that hangs, packets black-holed). The group coordinator may hold
// a JoinGroup or SyncGroup up to the rebalance timeout (until every member
// has rejoined, or the leader has assigned): those count as waiting only
// once their hold is over, so a rebalance that waits for a slow member is
// not an outage. Every other request counts from its write, a fetch too:
// a broker holds one at most fetch_max_wait, and unreachable_after is at
// least twice that (Config.Validate), so a held fetch never looks like an
// outage, and a hung broker is reported after unreachable_after still. A
// source that stopped fetching (the pipeline holds its in-flight budget)
// sends nothing and so waits for nothing: it is not reported. The
// connections of every client of the source share it; the requests are
// seen through franz-go's write hook (the connection only sees bytes,
// encrypted under TLS).
type liveness struct {
	groupHold time.Duration // how long the coordinator may hold a JoinGroup or SyncGroup: rebalance_timeout

	read    atomic.Int64          // unix nanos of the last byte read
	pending atomic.Int64          // unix nanos from which the earliest request written since the last read waits beyond its hold; 0: none
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

// WroteNow is told of bytes written to a broker (kafkaconn.Traffic). The
// requests they carry are counted by OnBrokerWrite, which knows what they
// are.
func (l *liveness) WroteNow() {}

// OnBrokerWrite counts a request written to a broker (kgo.HookBrokerWrite):
// it waits for its answer from the moment its write began plus what the
// broker may hold it (see liveness). A write that failed is held by
// nobody. If a byte was read since the write began, the brokers answered
// after it, and it is not counted, as a read clears every earlier wait.
func (l *liveness) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, timeToWrite time.Duration, err error) {
	began := time.Now().Add(-timeToWrite).UnixNano()
	var hold time.Duration
	if err == nil {
		switch kmsg.Key(key) {
		case kmsg.JoinGroup, kmsg.SyncGroup:
			hold = l.groupHold
		}
	}
	from := began + int64(hold)
	for {
		cur := l.pending.Load()
		if cur != 0 && cur <= from {
			break
		}
		if l.pending.CompareAndSwap(cur, from) {
			break
		}
	}
	// ReadNow stores read, then clears pending: if this load misses a
	// read, that read's clear comes after the store above.
	if l.read.Load() > began {
		l.pending.CompareAndSwap(from, 0)
	}
}

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
