package agenttest

import (
	"context"
	"io"
	"sync"

	"github.com/pspf/pspf-edge/agent"
)

// ScriptSource emits the given batches in order, then io.EOF once every batch
// has been acked; a nacked batch is emitted again. It records every ack.
type ScriptSource struct {
	mu      sync.Mutex
	batches [][]agent.Record
	next    int
	redo    [][]agent.Record
	unacked int
	Acks    []error
	Closed  bool
	changed chan struct{}
}

// NewScriptSource returns a source that emits batches.
func NewScriptSource(batches ...[]agent.Record) *ScriptSource {
	return &ScriptSource{batches: batches, changed: make(chan struct{}, 1)}
}

// Connect does nothing.
func (s *ScriptSource) Connect(context.Context) error { return nil }

// Read returns the next batch.
func (s *ScriptSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	for {
		s.mu.Lock()
		var b []agent.Record
		switch {
		case len(s.redo) > 0:
			b, s.redo = s.redo[0], s.redo[1:]
		case s.next < len(s.batches):
			b = s.batches[s.next]
			s.next++
		case s.unacked == 0:
			s.mu.Unlock()
			return nil, nil, io.EOF
		}
		if b != nil {
			s.unacked++
			s.mu.Unlock()
			cp := append([]agent.Record(nil), b...)
			var once sync.Once
			return cp, func(_ context.Context, err error) {
				once.Do(func() {
					s.mu.Lock()
					s.Acks = append(s.Acks, err)
					s.unacked--
					if err != nil {
						s.redo = append(s.redo, b)
					}
					s.mu.Unlock()
					select {
					case s.changed <- struct{}{}:
					default:
					}
				})
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-s.changed:
		}
	}
}

// Close records that it was called.
func (s *ScriptSource) Close(context.Context) error {
	s.mu.Lock()
	s.Closed = true
	s.mu.Unlock()
	return nil
}

// AckErrors returns a copy of the acks so far.
func (s *ScriptSource) AckErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.Acks...)
}

// RecordingSink keeps every record written to it. Fail, if set, is called
// before each write; a non-nil result fails that write.
type RecordingSink struct {
	mu      sync.Mutex
	Got     []agent.Record
	Writes  int
	Fail    func(attempt int, recs []agent.Record) error
	Closed  bool
	Flushed bool
}

// Connect does nothing.
func (s *RecordingSink) Connect(context.Context) error { return nil }

// Write records the batch unless Fail says otherwise. A RejectedError keeps
// the records it does not list.
func (s *RecordingSink) Write(_ context.Context, recs []agent.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Writes++
	var err error
	if s.Fail != nil {
		err = s.Fail(s.Writes, recs)
	}
	if rej, ok := err.(*agent.RejectedError); ok {
		skip := map[int]bool{}
		for _, i := range rej.Index {
			skip[i] = true
		}
		for i, r := range recs {
			if !skip[i] {
				s.Got = append(s.Got, clone(r))
			}
		}
		return err
	}
	if err != nil {
		return err
	}
	for _, r := range recs {
		s.Got = append(s.Got, clone(r))
	}
	return nil
}

func clone(r agent.Record) agent.Record {
	r.Fields = append([]agent.Field(nil), r.Fields...)
	r.Raw = append([]byte(nil), r.Raw...)
	return r
}

// Records returns a copy of what was written.
func (s *RecordingSink) Records() []agent.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]agent.Record(nil), s.Got...)
}

// Flush records that it was called.
func (s *RecordingSink) Flush(context.Context) error {
	s.mu.Lock()
	s.Flushed = true
	s.mu.Unlock()
	return nil
}

// Close records that it was called.
func (s *RecordingSink) Close(context.Context) error {
	s.mu.Lock()
	s.Closed = true
	s.mu.Unlock()
	return nil
}

// OperatorFunc adapts a function to agent.Operator.
type OperatorFunc func(ctx context.Context, b *agent.Batch) error

// Process calls f.
func (f OperatorFunc) Process(ctx context.Context, b *agent.Batch) error { return f(ctx, b) }
