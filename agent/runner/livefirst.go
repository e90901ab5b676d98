package runner

import (
	"errors"
	"fmt"

	"github.com/pspf/pspf-edge/agent"
)

// live_first drain order
//
// Normally a sink reads its log with one cursor, oldest record first. With
// drain.order: live_first, when the sink comes back after an outage (or the
// agent starts) with more than one batch of backlog, a second persistent
// cursor, "sink.<name>.live", is placed at the end of the log (liveStart).
// From then on each round prefers new records from the live cursor and
// otherwise sends the next backlog batch from the main cursor, which is held
// below liveStart. When the main cursor reaches liveStart the backlog is done:
// the main cursor is moved (Seek) to where the live cursor is, and the sink
// goes on with one cursor.
//
// Why nothing is skipped or lost: every sequence below liveStart is sent by
// the main cursor, every one from liveStart up to the live cursor's position
// by the live cursor, and the main cursor only jumps over that second range
// after it has finished the first. The main cursor's persisted ack only ever
// covers records the main cursor delivered (or, after the jump, that the live
// cursor did), and it is the lowest of the two, so the log keeps every
// segment either cursor still needs, and a crash in the middle redelivers from
// the main cursor: records already sent live come again (at-least-once, same
// stable IDs), none is missing. Outside live mode the live cursor is acked
// along with the main one, so it never holds segments back.
//
// Per-key order is not kept in live_first mode (new readings of a key arrive
// before older ones); oldest_first keeps it. A CursorOwner sink always drains
// oldest_first, since its cursor can only say "everything up to here".

// seeker is the part of *buffer.Reader that live_first needs: moving the
// main cursor over what the live cursor delivered.
type seeker interface {
	Seek(seq uint64) error
}

func (s *sinkRun) setupLive(c ComponentSpec) {
	if _, ok := ownCursor(s.sink); ok {
		s.log.Warn("drain.order live_first is not possible for a sink that keeps its own cursor; using oldest_first")
		return
	}
	if _, ok := s.reader.(seeker); !ok {
		s.log.Warn("drain.order live_first needs a seekable log; using oldest_first")
		return
	}
	live, err := s.src.Reader("sink." + c.Name + ".live")
	if err != nil {
		s.log.Warn("drain.order live_first: no live cursor; using oldest_first", "err", err)
		return
	}
	s.live = live
}

// pick returns the reader of the next round: the live cursor when in live
// mode and new records are waiting, else the main one.
func (s *sinkRun) pick() (LogReader, bool) {
	if s.inLive && s.src.NextSeq() > s.liveNext {
		return s.live, true
	}
	return s.reader, false
}

// followMain acks the live cursor along with the main one outside live mode,
// so that it never holds back segments.
func (s *sinkRun) followMain(last uint64) {
	if s.live == nil || s.inLive {
		return
	}
	if err := s.live.Ack(last); err != nil && !errors.Is(err, agent.ErrStopped) {
		s.log.Debug("live cursor: follow main", "err", err)
	}
}

// maybeStartLive enters live mode after an outage when more than one batch
// is waiting.
func (s *sinkRun) maybeStartLive() {
	if s.live == nil || !s.wasOffline {
		return
	}
	s.wasOffline = false
	end := s.src.NextSeq()
	if end <= s.mainNext || end-s.mainNext <= uint64(s.opts.Batch.MaxRecords) {
		return
	}
	if err := s.live.Ack(end - 1); err != nil {
		s.fail(fmt.Errorf("live cursor: %w", err))
		return
	}
	s.inLive, s.liveStart, s.liveNext = true, end, end
	s.log.Info("draining live first: new records go ahead of the backlog", "backlog_records", end-s.mainNext, "live_from", end)
}

// endLive ends live mode: the backlog is delivered, so the main cursor moves
// to where the live cursor is.
func (s *sinkRun) endLive() {
	if err := s.reader.(seeker).Seek(s.liveNext); err != nil {
		// Cannot jump: stay in one-cursor mode from the main cursor's place;
		// what the live cursor sent is sent again (duplicates, no loss).
		s.fail(fmt.Errorf("live_first: move main cursor to %d: %w", s.liveNext, err))
	} else {
		s.mainNext = s.liveNext
		s.acked.Store(s.liveNext - 1)
	}
	s.inLive = false
	s.log.Info("backlog drained; live_first back to one cursor", "next", s.mainNext)
}
