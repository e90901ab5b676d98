// Package agenttest has what tests of pipelines and connectors share: an
// in-memory runner.Log, a scripted source, a recording sink, the checks of
// a connector README's samples, an Env and parsing helpers for operator
// tests, a log buffer and a polling wait. Only tests import it: it depends
// on the runtime (agent/runner), which plugins themselves never import.
package agenttest

import (
	"context"
	"errors"
	"sync"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// MemLog is an in-memory runner.Log for tests: unbounded, never durable.
// Readers block on a channel that is replaced on every append.
type MemLog struct {
	mu      sync.Mutex
	recs    [][]byte
	first   uint64 // sequence of recs[0]
	cursors map[string]uint64
	grew    chan struct{}
	closed  bool
	Syncs   int // number of Sync calls, for group-commit tests
}

// NewMemLog returns an empty log whose first record gets sequence 1.
func NewMemLog() *MemLog {
	return &MemLog{first: 1, cursors: map[string]uint64{}, grew: make(chan struct{})}
}

// Open returns an runner.OpenLogFunc that hands out a fresh MemLog per directory
// and the same one again for a directory it has seen.
func Open() runner.OpenLogFunc {
	var mu sync.Mutex
	logs := map[string]*MemLog{}
	return func(dir string, _ runner.BufferConfig) (runner.Log, error) {
		mu.Lock()
		defer mu.Unlock()
		l, ok := logs[dir]
		if !ok || l.closedNow() {
			if ok {
				l.reopen()
			} else {
				l = NewMemLog()
				logs[dir] = l
			}
		}
		return l, nil
	}
}

func (l *MemLog) closedNow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *MemLog) reopen() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = false
}

// Append copies the payloads.
func (l *MemLog) Append(_ context.Context, payloads [][]byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, agent.ErrStopped
	}
	for _, p := range payloads {
		l.recs = append(l.recs, append([]byte(nil), p...))
	}
	close(l.grew)
	l.grew = make(chan struct{})
	return l.first + uint64(len(l.recs)) - 1, nil
}

// Sync counts the call and returns.
func (l *MemLog) Sync(context.Context, uint64) error {
	l.mu.Lock()
	l.Syncs++
	l.mu.Unlock()
	return nil
}

// NextSeq returns the next sequence number.
func (l *MemLog) NextSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first + uint64(len(l.recs))
}

// Len returns the number of records appended.
func (l *MemLog) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// Records decodes every record in the log.
func (l *MemLog) Records() ([]agent.Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]agent.Record, len(l.recs))
	for i, p := range l.recs {
		if _, err := out[i].UnmarshalMsg(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Close marks the log closed; cursors and records are kept for a reopen.
func (l *MemLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return nil
}

// Reader returns the named cursor.
func (l *MemLog) Reader(name string) (runner.LogReader, error) {
	return &memReader{l: l, name: name}, nil
}

type memReader struct {
	l    *MemLog
	name string
}

func (r *memReader) Read(ctx context.Context, buf []runner.LogRecord, maxBytes int) ([]runner.LogRecord, error) {
	for {
		r.l.mu.Lock()
		next := r.l.cursors[r.name] + 1
		if next < r.l.first {
			next = r.l.first
		}
		buf = buf[:0]
		size := 0
		for seq := next; seq < r.l.first+uint64(len(r.l.recs)) && len(buf) < cap(buf); seq++ {
			p := r.l.recs[seq-r.l.first]
			if len(buf) > 0 && size+len(p) > maxBytes {
				break
			}
			size += len(p)
			buf = append(buf, runner.LogRecord{Seq: seq, Payload: p})
		}
		if len(buf) == 0 && cap(buf) == 0 {
			r.l.mu.Unlock()
			return nil, errors.New("memlog: read into a buffer of capacity 0")
		}
		grew := r.l.grew
		r.l.mu.Unlock()
		if len(buf) > 0 {
			return buf, nil
		}
		select {
		case <-ctx.Done():
			return buf, ctx.Err()
		case <-grew:
		}
	}
}

func (r *memReader) Ack(seq uint64) error {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if seq > r.l.cursors[r.name] {
		r.l.cursors[r.name] = seq
	}
	return nil
}
