package state

import (
	"bytes"
	"fmt"
	"time"
)

// Store is the keyed state of one pipeline: one Table per stateful
// operator, and checkpoints that capture every table's changes together
// with the caller's metadata (the pipeline-log position they reflect). The
// runner opens one Store per pipeline; the operators see its tables only,
// through agent.StateTable, whose method set Table has.
//
// Two stores implement it, and both pass the same test suite
// (store_suite_test.go):
//
//   - DB (Open): a bbolt file with a write-back cache. A checkpoint writes
//     the changes and the metadata in one transaction; after a restart the
//     DB holds exactly the state of the last committed checkpoint, and
//     LastCheckpoint returns it.
//   - Memory (NewMemory): the state in RAM only. A checkpoint writes
//     nothing anywhere; a new Memory is empty and has no checkpoint, so
//     the state does not survive the process.
//
// A store kept elsewhere (a changelog topic) fits the same contract:
// Prepare captures the changes since the last checkpoint, Commit ships them
// with the metadata and returns once they are durable there, and Open
// restores the state and the metadata of the last committed checkpoint.
//
// The contract every Store keeps:
//
//   - Changes are visible at once to Get and Range of every caller. A
//     checkpoint (Prepare, then Commit) captures exactly the state at
//     Prepare; changes made after it belong to the next checkpoint.
//   - Keys are 1 to MaxKeySize bytes, values at most MaxValueSize bytes;
//     Put copies both. A key of a table with a TTL that was not written
//     for the TTL (on the state clock, see the package doc) is absent at
//     once; its memory is reclaimed by a later checkpoint at the latest.
//   - Memory is bounded by Options.CacheBytes, charged per entry as its
//     key, its value buffer and EntryOverhead; Stats reports it. DB may
//     exceed it by the changes since the last checkpoint and signals
//     Pressure so that one is taken; Memory never exceeds it: a Put that
//     would is refused with ErrFull (one WARN per episode, Stats.Refused).
//   - DropTable makes the table's handle fail with ErrTableDropped and
//     frees its entries at once; the name can be opened again, empty, once
//     the next checkpoint has committed.
//   - Every method returns ErrClosed after Close (Stats and Damaged still
//     work); Close is idempotent and waits for a Pending to end.
//   - A Store and its tables are safe for concurrent use.
type Store interface {
	// Table returns the table called name (1 to MaxTableNameLen bytes of
	// [A-Za-z0-9._-]), creating it if needed; ttl > 0 expires keys not
	// written for that long, 0 keeps them until deleted. The same name
	// returns the same table; with another ttl it fails with ErrTableTTL.
	Table(name string, ttl time.Duration) (Table, error)
	// Tables returns the names of the store's tables, sorted, without the
	// dropped ones: those that hold state from an earlier run too.
	Tables() ([]string, error)
	// DropTable deletes the table called name; see the contract above.
	// Dropping a table that does not exist is not an error.
	DropTable(name string) error
	// Prepare captures a checkpoint: the changes of every table since the
	// last one and meta (copied; it replaces the previous checkpoint's
	// metadata entirely). It waits for the previous Pending to end.
	Prepare(meta map[string][]byte) (Pending, error)
	// LastCheckpoint returns the last committed checkpoint (Seq 0: none).
	LastCheckpoint() (CheckpointInfo, error)
	// Pressure receives a value when the store wants a checkpoint early
	// (the changes since the last one use much of the budget); it has one
	// slot, signals coalesce, and it is never closed. Memory never
	// signals it.
	Pressure() <-chan struct{}
	// Damaged returns the first error wrapping ErrCorrupt the store met,
	// or nil. A damaged store refuses checkpoints.
	Damaged() error
	// Stats returns the store's counters.
	Stats() Stats
	// Close releases the store. Changes not checkpointed are discarded.
	Close() error
}

// Table is the keyed state of one operator in a Store: opaque byte keys
// and values. It has the method set of agent.StateTable, which is how the
// operators see it.
type Table interface {
	// Name returns the table's name.
	Name() string
	// TTL returns the table's TTL (0: none).
	TTL() time.Duration
	// Get appends the value of key to dst and returns the extended slice
	// and true, or dst and false when the key is absent or expired. The
	// returned slice is the caller's; key is not retained.
	Get(key, dst []byte) ([]byte, bool, error)
	// Put sets key to val; it copies both. It fails with ErrKeySize or
	// ErrValueSize before anything changes, and with ErrFull when the
	// store has a hard budget that the value would exceed; the key then
	// keeps its old value.
	Put(key, val []byte) error
	// Delete removes key; deleting an absent key is not an error.
	Delete(key []byte) error
	// Range calls fn for every live key in byte order of keys until fn
	// returns false. k and v are valid only during the call and must not
	// be modified. fn may call any method of the store and its tables
	// except Close; a key changed while Range runs may be seen with its
	// old or its new value.
	Range(fn func(k, v []byte) bool) error
	// Len returns the number of keys in the table. Keys whose TTL has
	// passed may count until the checkpoint that removes them.
	Len() (int, error)
}

// Pending is a prepared checkpoint. Exactly one of Commit or Abort must be
// called; until then no other checkpoint can be prepared and Close waits.
// A Pending is not safe for concurrent use.
type Pending interface {
	// Entries returns the number of changes the checkpoint holds: 0 when
	// no table changed since the last checkpoint.
	Entries() int
	// Commit makes the checkpoint the store's last one and blocks until it
	// is durable (for Memory: at once); the tables stay usable meanwhile.
	// A failed commit leaves the previous checkpoint in force and the
	// store refuses further checkpoints (ErrBroken).
	Commit() (CheckpointStats, error)
	// Abort drops the prepared checkpoint: its changes go to the next one.
	// Abort after Commit or Abort does nothing.
	Abort()
}

// Both stores implement Store.
var (
	_ Store = (*DB)(nil)
	_ Store = (*Memory)(nil)
)

// copyMeta checks checkpoint metadata against the limits and returns a
// copy of it.
func copyMeta(meta map[string][]byte) (map[string][]byte, error) {
	for k, v := range meta {
		if len(k) == 0 || len(k) > MaxMetaKeySize {
			return nil, fmt.Errorf("state: checkpoint meta key %q: must be 1 to %d bytes: %w", k, MaxMetaKeySize, ErrKeySize)
		}
		if len(v) > MaxValueSize {
			return nil, fmt.Errorf("state: checkpoint meta %q: value is %d bytes, limit %d: %w", k, len(v), MaxValueSize, ErrValueSize)
		}
	}
	mcopy := make(map[string][]byte, len(meta))
	for k, v := range meta {
		mcopy[k] = bytes.Clone(v)
	}
	return mcopy, nil
}
