// Package checkpoint makes the periodic, atomic checkpoints of one pipeline
// and loads the last one for recovery.
//
// A checkpoint is one commit of the pipeline's state store (a
// state.Store): the operator state changes, the pipeline-log cursor the
// stateful operators have consumed, each outbox's end position, a sequence
// number and a time. With the bbolt store (state.DB) it is one bbolt
// transaction in the state file; with the memory store (state.Memory) it
// writes nothing and only records the position, which the runner then acks
// in the pipeline log. The Manager pauses the pipeline only while the dirty
// state is captured (no copy of keys or values); the fsyncs run while the
// pipeline goes on.
//
// # Recovery contract
//
// On start, before any source is read:
//
//  1. Open the state store and call Load. With no checkpoint (ok == false),
//     start from empty state, log cursor 0 and empty outboxes.
//  2. Cut every outbox back to Outboxes[name] (an outbox missing from the
//     map is cut to 0): anything past it was produced from state that never
//     reached the file and will be produced again.
//  3. Replay the pipeline log from Log through the stateful operators, then
//     go on with live input.
//
// The state reflects exactly the loaded checkpoint, so each record after
// the cursor is applied once (exactly-once state); outputs produced again
// carry the same stable IDs (at-least-once delivery).
//
// # After a state reset
//
// When the state file was damaged (Load or state.Open fail with an error
// wrapping state.ErrCorrupt) or is missing or empty although a checkpoint
// had been committed, the runner moves it aside, starts from empty state
// and replays the log from its oldest retained record. The outboxes are
// not cut: they hold real outputs, some delivered already. Position.Emitted
// records how far the log had been processed before the reset (the runner's
// persisted log cursor), and the outputs of the records up to it are dropped
// during the replay: they are in the outboxes already. The runner commits
// that position at once, so that a crash during the replay resumes it.
package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/state"
)

// Metadata keys in the state store's checkpoint metadata.
const (
	metaVersion   = "checkpoint.v"
	metaLog       = "checkpoint.log"
	metaEmitted   = "checkpoint.emitted"
	metaOutboxPfx = "checkpoint.outbox/"
	formatVersion = 1
)

// MaxOutboxNameLen is the longest outbox name. Names are sink names from the
// pipeline config.
const MaxOutboxNameLen = 256

// Position is where the pipeline stood when a checkpoint was captured.
type Position struct {
	// Log is the pipeline-log sequence of the next record the stateful
	// operators will read: every record before it is reflected in the state.
	Log uint64
	// Outboxes maps each outbox (by sink name) to its end position: the
	// position after the last record written into it from the state.
	Outboxes map[string]uint64
	// Emitted, when at least Log, is the last pipeline-log sequence whose
	// outputs are already in the outboxes although the state does not
	// reflect it (a state reset: see the package doc): the outputs of the
	// records from Log to Emitted are to be dropped. 0 otherwise.
	Emitted uint64
}

// Equal reports whether p and o are the same position.
func (p Position) Equal(o Position) bool {
	return p.Log == o.Log && p.Emitted == o.Emitted && maps.Equal(p.Outboxes, o.Outboxes)
}

// Checkpoint is a committed checkpoint.
type Checkpoint struct {
	Seq  uint64    // from 1, incremented by every committed checkpoint
	Time time.Time // the state clock when it was captured (see package state, TTL)
	Position
}

// ErrNoMetadata is returned by Load when the state store holds a checkpoint
// that was not written by this package (or by an incompatible version).
var ErrNoMetadata = errors.New("checkpoint: no checkpoint metadata")

// Load returns the last committed checkpoint of db, with ok false when there
// is none. It reads only the DB's record of its last commit; it does not
// block on a running checkpoint. The Outboxes map is the caller's. A record
// that does not decode is damage: the error wraps state.ErrCorrupt.
func Load(db state.Store) (cp Checkpoint, ok bool, err error) {
	info, err := db.LastCheckpoint()
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint: load: %w", err)
	}
	if info.Seq == 0 {
		return Checkpoint{}, false, nil
	}
	pos, err := decode(info.Meta)
	if err != nil && !errors.Is(err, ErrNoMetadata) {
		// The file says a checkpoint committed, but its record does not
		// decode: damage.
		err = fmt.Errorf("%w: %w", err, state.ErrCorrupt)
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint: load %d: %w", info.Seq, err)
	}
	return Checkpoint{Seq: info.Seq, Time: info.Time, Position: pos}, true, nil
}

func encode(p Position) (map[string][]byte, error) {
	m := make(map[string][]byte, len(p.Outboxes)+2)
	m[metaVersion] = []byte{formatVersion}
	m[metaLog] = binary.BigEndian.AppendUint64(nil, p.Log)
	if p.Emitted > 0 {
		m[metaEmitted] = binary.BigEndian.AppendUint64(nil, p.Emitted)
	}
	for name, end := range p.Outboxes {
		if name == "" || len(name) > MaxOutboxNameLen {
			return nil, fmt.Errorf("outbox name %q: must be 1 to %d bytes", name, MaxOutboxNameLen)
		}
		m[metaOutboxPfx+name] = binary.BigEndian.AppendUint64(nil, end)
	}
	return m, nil
}

func decode(m map[string][]byte) (Position, error) {
	v, ok := m[metaVersion]
	if !ok {
		return Position{}, ErrNoMetadata
	}
	if len(v) != 1 || v[0] != formatVersion {
		return Position{}, fmt.Errorf("format version %x, want %d: %w", v, formatVersion, ErrNoMetadata)
	}
	p := Position{Outboxes: make(map[string]uint64)}
	for k, v := range m {
		isLog, isEmitted, isOutbox := k == metaLog, k == metaEmitted, strings.HasPrefix(k, metaOutboxPfx)
		if !isLog && !isEmitted && !isOutbox {
			continue // the version, or written by someone else
		}
		if len(v) != 8 {
			return Position{}, fmt.Errorf("meta %q: %d bytes, want 8", k, len(v))
		}
		switch {
		case isLog:
			p.Log = binary.BigEndian.Uint64(v)
		case isEmitted:
			p.Emitted = binary.BigEndian.Uint64(v)
		default:
			p.Outboxes[k[len(metaOutboxPfx):]] = binary.BigEndian.Uint64(v)
		}
	}
	return p, nil
}
