package runner

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/pspf/pspf-edge/agent"
)

// live_first drain order
//
// Normally a sink reads its log with one cursor, oldest record first. With
// drain.order: live_first, when the sink comes back after an outage (or the
// agent starts) with more than one batch of backlog, a second persistent
// cursor, "sink.<name>.live", is placed at the end of the log (start).
// From then on each round prefers new records from the live cursor and
// otherwise sends the next backlog batch from the main cursor, which is held
// below start. When the main cursor reaches start the backlog is done: the
// main cursor is moved (Seek) to where the live cursor is, and the sink goes
// on with one cursor.
//
// Why nothing is skipped or lost: every sequence below start is sent by the
// main cursor, every one from start up to the live cursor's position by the
// live cursor, and the main cursor only jumps over that second range after
// it has finished the first. The main cursor's persisted ack only ever
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

// liveFirst is the state of a sink's drain order: which cursor serves the
// next round, and where each one is. With oldest_first (live nil) it only
// hands out the main cursor. The sink's loop owns it: no locking.
type liveFirst struct {
	src   Log
	main  LogReader // the sink's cursor
	live  LogReader // the live cursor; nil: oldest_first
	log   *slog.Logger
	batch uint64 // batch.max_records: a larger backlog starts live mode

	on       bool   // the backlog below start is being drained behind live data
	start    uint64 // first sequence the live cursor serves
	liveNext uint64 // next sequence the live cursor will read
	mainNext uint64 // next sequence the main cursor will read; 0: unknown
	outage   bool   // the destination was unreachable (or the agent restarted) since the last decision
}

// newLiveFirst returns the drain order of sink name: live_first if order
// says so and the sink and its log allow it (else a WARN, and
// oldest_first).
func newLiveFirst(order, name string, sink agent.Sink, main LogReader, src Log, batch int, log *slog.Logger) *liveFirst {
	l := &liveFirst{src: src, main: main, log: log, batch: uint64(batch),
		outage: true} // a start is the end of an outage of unknown length
	if order != "live_first" {
		return l
	}
	if _, ok := ownCursor(sink); ok {
		log.Warn("drain.order live_first is not possible for a sink that keeps its own cursor; using oldest_first")
		return l
	}
	if _, ok := main.(seeker); !ok {
		log.Warn("drain.order live_first needs a seekable log; using oldest_first")
		return l
	}
	live, err := src.Reader("sink." + name + ".live")
	if err != nil {
		log.Warn("drain.order live_first: no live cursor; using oldest_first", "err", err)
		return l
	}
	l.live = live
	return l
}

// pick returns the cursor of the next round: the live one when in live
// mode and new records are waiting, else the main one.
func (l *liveFirst) pick() (r LogReader, live bool) {
	if l.on && l.src.NextSeq() > l.liveNext {
		return l.live, true
	}
	return l.main, false
}

// readLimit returns how many of n records the cursor picked (live) may
// read: in live mode, the main cursor reads no further than the backlog
// (what lies beyond is the live cursor's); at least one.
func (l *liveFirst) readLimit(n int, live bool) int {
	if l.on && !live && l.mainNext > 0 && l.start > l.mainNext {
		return int(max(1, min(uint64(n), l.start-l.mainNext)))
	}
	return n
}

// backlogOnly reports whether a round of the cursor picked (live) may send
// only records below start: the main cursor's in live mode.
func (l *liveFirst) backlogOnly(live bool) bool { return l.on && !live }

// topUp reports whether a round may read more to fill its batch: not in
// live mode, where a round is one Read of either cursor.
func (l *liveFirst) topUp() bool { return !l.on }

// offline notes an outage: the next decision may start live mode.
func (l *liveFirst) offline() { l.outage = true }

// delivered moves the state past a round that the live cursor (live) or
// the main one sent up to last, and decides what comes next. It returns
// the sequence the main cursor has now passed: last, or, when live mode
// ends and the main cursor jumps, the end of what the live cursor sent.
// An error says what did not work; the order falls back without loss.
func (l *liveFirst) delivered(last uint64, live bool) (uint64, error) {
	if live {
		l.liveNext = last + 1
		return 0, nil
	}
	l.mainNext = last + 1
	if l.on {
		if l.mainNext >= l.start {
			return l.end(last)
		}
		return last, nil
	}
	l.follow(last)
	return last, l.maybeStart()
}

// follow acks the live cursor along with the main one outside live mode,
// so that it never holds back segments.
func (l *liveFirst) follow(last uint64) {
	if l.live == nil {
		return
	}
	if err := l.live.Ack(last); err != nil && !errors.Is(err, agent.ErrStopped) {
		l.log.Debug("live cursor: follow main", "err", err)
	}
}

// maybeStart enters live mode after an outage when more than one batch is
// waiting.
func (l *liveFirst) maybeStart() error {
	if l.live == nil || !l.outage {
		return nil
	}
	l.outage = false
	end := l.src.NextSeq()
	if end <= l.mainNext || end-l.mainNext <= l.batch {
		return nil
	}
	if err := l.live.Ack(end - 1); err != nil {
		return fmt.Errorf("live cursor: %w", err)
	}
	l.on, l.start, l.liveNext = true, end, end
	l.log.Info("draining live first: new records go ahead of the backlog", "backlog_records", end-l.mainNext, "live_from", end)
	return nil
}

// end ends live mode: the backlog is delivered, so the main cursor moves
// to where the live cursor is. acked is the main cursor's position before;
// end returns its position after.
func (l *liveFirst) end(acked uint64) (uint64, error) {
	l.on = false
	err := l.main.(seeker).Seek(l.liveNext)
	if err == nil {
		l.mainNext, acked = l.liveNext, l.liveNext-1
	} else {
		// Cannot jump: stay in one-cursor mode from the main cursor's place;
		// what the live cursor sent is sent again (duplicates, no loss).
		err = fmt.Errorf("live_first: move main cursor to %d: %w", l.liveNext, err)
	}
	l.log.Info("backlog drained; live_first back to one cursor", "next", l.mainNext)
	return acked, err
}
