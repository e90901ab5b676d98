package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/state"
)

// Limits on Options.Interval.
const (
	// DefaultInterval is used when Options.Interval is 0. It bounds the
	// replay after a crash to about this much input.
	DefaultInterval = 10 * time.Second
	// MinInterval keeps a mistyped interval from turning every tick into
	// two fsyncs, which would wear out an SD card.
	MinInterval = 10 * time.Millisecond
)

// CaptureFunc is provided by the pipeline runner. The manager calls it at
// the start of every checkpoint. It must bring the stateful operators to a
// batch boundary and hold them there, then return the Position that the
// state reflects and a resume function. The manager captures the dirty
// state, then calls resume (exactly once, also when the checkpoint then
// fails); the pause lasts about as long as collecting the dirty entries.
// Capture should honour ctx; an error skips this checkpoint.
type CaptureFunc func(ctx context.Context) (pos Position, resume func(), err error)

// Options configures a Manager.
type Options struct {
	// Interval between periodic checkpoints (default DefaultInterval,
	// at least MinInterval).
	Interval time.Duration
	// Capture pauses the pipeline and reports its position. Required.
	Capture CaptureFunc
	// Logger receives skipped and failed checkpoints. Nil discards.
	Logger *slog.Logger
}

// Manager makes the checkpoints of one pipeline's state store. New starts
// nothing; Run checkpoints periodically; Now checkpoints on demand. Run and
// Now may be called concurrently; checkpoints are serialised.
type Manager struct {
	db      state.Store
	opts    Options
	log     *slog.Logger
	mu      sync.Mutex // serialises checkpoints; guards the fields below
	last    Checkpoint
	hasLast bool
	stats   state.CheckpointStats
}

// New returns a Manager for db, a state.DB, a state.Memory or any other
// state.Store. It reads the last checkpoint of db, so that an unchanged
// position with unchanged state is not written again.
func New(db state.Store, opts Options) (*Manager, error) {
	if opts.Capture == nil {
		return nil, errors.New("checkpoint: options: capture is required")
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Interval < MinInterval {
		return nil, fmt.Errorf("checkpoint: options: interval must be at least %s, got %s", MinInterval, opts.Interval)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{db: db, opts: opts, log: log}
	cp, ok, err := Load(db)
	if err != nil && !errors.Is(err, ErrNoMetadata) {
		return nil, err
	}
	m.last, m.hasLast = cp, ok
	return m, nil
}

// Run checkpoints every Interval, and early when the state store signals that
// its dirty entries pass half of the cache budget, until ctx ends; then it
// returns nil without a last checkpoint: on shutdown or reload, stop the
// sources, drain the chain, then call Now. A skipped checkpoint (Capture
// failed) is logged and retried at the next tick. A failed commit is final
// (state.ErrBroken): Run returns its error, and the pipeline must be
// restarted from the last checkpoint.
func (m *Manager) Run(ctx context.Context) error {
	tick := time.NewTicker(m.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-m.db.Pressure():
		}
		_, _, err := m.Now(ctx)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.As(err, new(captureError)):
			m.log.Warn("checkpoint: skipped", "err", err)
		default:
			return err
		}
	}
}

// captureError marks a failure of Options.Capture, which skips one
// checkpoint, apart from a failed commit, which is final.
type captureError struct{ err error }

func (e captureError) Error() string { return e.err.Error() }
func (e captureError) Unwrap() error { return e.err }

// Now makes a checkpoint at once and blocks until it is durable (or has
// failed); it returns the committed checkpoint and its figures. When neither
// the position nor the state changed since the last checkpoint, nothing is
// written and the last checkpoint is returned with zero stats. It waits for
// a checkpoint in progress to end first.
func (m *Manager) Now(ctx context.Context) (Checkpoint, state.CheckpointStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pos, resume, err := m.opts.Capture(ctx)
	if err != nil {
		return Checkpoint{}, state.CheckpointStats{}, fmt.Errorf("checkpoint: capture: %w", captureError{err})
	}
	meta, err := encode(pos)
	var p state.Pending
	if err == nil {
		p, err = m.db.Prepare(meta)
	}
	if resume != nil {
		resume()
	}
	if err != nil {
		return Checkpoint{}, state.CheckpointStats{}, fmt.Errorf("checkpoint: %w", err)
	}
	if p.Entries() == 0 && m.hasLast && pos.Equal(m.last.Position) {
		p.Abort()
		return m.lastCopy(), state.CheckpointStats{}, nil
	}
	st, err := p.Commit()
	if err != nil {
		return Checkpoint{}, st, fmt.Errorf("checkpoint: %w", err)
	}
	m.last = Checkpoint{Seq: st.Seq, Time: st.Time, Position: clonePos(pos)}
	m.hasLast, m.stats = true, st
	m.log.Debug("checkpoint", "seq", st.Seq, "written", st.Written, "deleted", st.Deleted,
		"expired", st.Expired, "bytes", st.BytesWritten, "commit", st.Commit)
	return m.lastCopy(), st, nil
}

// Last returns the last committed checkpoint (ok false when there is none)
// and the figures of the last one this Manager committed.
func (m *Manager) Last() (cp Checkpoint, st state.CheckpointStats, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastCopy(), m.stats, m.hasLast
}

// lastCopy returns m.last with its own Outboxes map. Requires m.mu.
func (m *Manager) lastCopy() Checkpoint {
	cp := m.last
	cp.Position = clonePos(cp.Position)
	return cp
}

func clonePos(p Position) Position {
	o := Position{Log: p.Log, Emitted: p.Emitted, Outboxes: make(map[string]uint64, len(p.Outboxes))}
	for k, v := range p.Outboxes {
		o.Outboxes[k] = v
	}
	return o
}
