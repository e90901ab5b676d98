package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pspf/pspf-edge/checkpoint"
	"github.com/pspf/pspf-edge/internal/atomicfile"
	"github.com/pspf/pspf-edge/state"
)

// A damaged state file must never stop a pipeline for good. When state.db
// cannot be trusted, the stage resets its state:
//
//   - detected at open (state.Open or checkpoint.Load fail with
//     state.ErrCorrupt; this includes a file found damaged while in use by
//     the previous generation, which left a note on closing): the file is
//     moved aside (state.MoveAside: kept for inspection, the directory
//     fsynced) and a new, empty one is opened;
//   - found while running (a read meets a bad page: state.DB.Damaged; a
//     checkpoint that fails to commit): the stage stops without emitting
//     the batch that met it and without checkpointing, the pipeline ends
//     (Pipeline.abort) and the supervisor starts it again, which lands in
//     the case above, or, for a failed commit over a sound file, in the
//     normal recovery from the last checkpoint;
//   - a file that is missing or empty although a checkpoint had been
//     committed: the marker file (markerName) or the stateful cursor of the
//     pipeline log, acked inside the retained records, says so.
//
// A reset replays the pipeline log from its oldest retained record with
// empty state (recover, no checkpoint). State built from records the log
// no longer holds is lost. The outbox is not cut: it holds real outputs,
// some delivered already. The stateful cursor's persisted ack says how far
// the stage had gone; the outputs (and dead letters) of the replayed records
// up to it are dropped, since the outbox has them already; after it, outputs
// flow again, and those produced before the reset but after the last
// checkpoint are produced again, with the same stable IDs (at-least-once).
// A window that began before the oldest retained record is emitted with the
// records the log still holds only: where its complete version went out
// before the damage, both carry the same ID, and a consumer that drops
// duplicates by ID keeps the first, complete one. The reset position is
// committed at once (checkpoint.Position.Emitted), so a crash during the
// replay resumes it, and one WARN says what happened, where the file went
// and what may be lost; pspf_state_resets_total and the status's
// state_resets count resets.

// markerName is a file beside state.db whose presence says that state.db
// has held a committed checkpoint, so that a state.db found missing or
// empty is reported rather than silently started afresh. It is written
// once, after the first checkpoint (or the first open of a file that has
// one), and never removed: a reset commits a checkpoint at once.
const markerName = "state.committed"

// stateReset says why the stage started from empty state.
type stateReset struct {
	cause error  // the damage, or why the file was expected to hold state
	aside string // where the damaged file went; "" when there was none
}

// openState opens state.db and loads its checkpoint. A damaged file is
// moved aside and an empty one opened instead (s.reset says so); so is a
// missing or empty file where state was expected. It needs s.reader.
func (s *statefulStage) openState(path string) (checkpoint.Checkpoint, bool, error) {
	deps := s.p.deps
	opts := state.Options{CacheBytes: deps.StateCacheBytes, Logger: s.log, Now: deps.Now}
	marker := filepath.Join(filepath.Dir(path), markerName)
	_, err := os.Stat(marker)
	expected := err == nil
	var cp checkpoint.Checkpoint
	var ok bool
	for {
		db, err := state.Open(path, opts)
		if err == nil {
			if cp, ok, err = checkpoint.Load(db); err != nil {
				db.Close()
			}
		}
		if err == nil {
			s.db = db
			break
		}
		if !errors.Is(err, state.ErrCorrupt) || s.reset != nil {
			return cp, ok, err
		}
		aside, merr := state.MoveAside(path, time.Now())
		if merr != nil {
			return cp, ok, fmt.Errorf("%w; moving it aside failed: %w", err, merr)
		}
		s.reset = &stateReset{cause: err, aside: aside}
	}
	if s.reset == nil && !ok && !s.fromMemory {
		switch first, acked, found := s.statefulCursor(); {
		case expected:
			s.reset = &stateReset{cause: fmt.Errorf("%s is missing or empty, though %s says a checkpoint was committed", filepath.Base(path), markerName)}
		case found && acked >= first:
			s.reset = &stateReset{cause: fmt.Errorf("%s is missing or empty, though the pipeline log's %q cursor was acked by a checkpoint", filepath.Base(path), statefulCursor)}
		}
	}
	if ok {
		s.writeMarker()
	}
	return cp, ok, nil
}

// statefulCursor returns the pipeline log's oldest retained record and the
// stateful cursor's ack as persisted (found false when the log cannot say).
func (s *statefulStage) statefulCursor() (first, acked uint64, found bool) {
	st, ok := s.p.plog.(stageLogStatter)
	if !ok {
		return 1, 0, false
	}
	stats := st.Stats()
	for _, c := range stats.Cursors {
		if c.Name == statefulCursor {
			return max(stats.FirstSeq, 1), c.Acked, true
		}
	}
	return max(stats.FirstSeq, 1), 0, false
}

// writeMarker writes markerName durably if it is not there yet, and, on
// the first run with the bbolt store after one with the memory store,
// removes memoryMarker (stateful_store.go). A failure costs only the
// warning about a state file found missing later, or the state of this
// run if the agent restarts before the next checkpoint: it is logged, and
// tried again at the next checkpoint. Two checkpoints calling it at once
// may both write the file, which is harmless.
func (s *statefulStage) writeMarker() {
	if s.marked.Load() {
		return
	}
	dir := s.p.deps.DataDir
	path := filepath.Join(dir, markerName)
	if _, err := os.Stat(path); err != nil {
		err := atomicfile.WriteDurable(path, []byte("state.db holds a committed checkpoint; if it is found missing or empty, the agent warns\n"), 0o600)
		if err != nil {
			s.log.Warn("state marker not written", "path", path, "err", err)
			return
		}
	}
	if s.fromMemory {
		// state.db has a checkpoint now: it is no longer stale.
		if err := s.removeMemoryMarker(); err != nil {
			s.log.Warn("state marker not removed", "path", filepath.Join(dir, memoryMarker), "err", err)
			return
		}
	}
	s.marked.Store(true)
}

// announceReset logs the reset (one WARN), counts it and shows it in the
// status; recover has set the replay's range.
func (s *statefulStage) announceReset() {
	r := s.reset
	s.resets.Inc()
	last := s.p.plog.NextSeq() - 1
	lost := "nothing: the pipeline log still holds every record from the first"
	if s.next > 1 {
		lost = fmt.Sprintf("the state built from pipeline-log records before %d, which the log no longer holds: "+
			"windows and keys that began before them go on with the records the log still has", s.next)
	}
	attrs := []any{"err", r.cause, "replay_from", s.next, "replay_to", last, "may_be_lost", lost}
	if s.quiet > 0 {
		attrs = append(attrs, "outputs_already_sent_through", s.quiet)
	}
	msg := "state file missing or empty; the stateful operators start from empty state and replay the pipeline log"
	if r.aside != "" {
		msg = "state file damaged: moved aside; the stateful operators start from empty state and replay the pipeline log"
		attrs = append([]any{"moved_to", r.aside}, attrs...)
	}
	s.log.Warn(msg, attrs...)
	s.p.setErr(fmt.Errorf("stateful: state reset: %w", r.cause))
}
