package state

import "errors"

// Sentinel errors. Errors returned by this package wrap them (test with
// errors.Is) and carry the table name and the offending value.
var (
	// ErrClosed is returned by every method called after DB.Close.
	ErrClosed = errors.New("state: closed")

	// ErrBroken is returned by Prepare and Checkpoint after a checkpoint
	// commit has failed. A failed commit (typically a failed fsync) is final:
	// it is never retried on the same data; reopen the DB, which recovers
	// the last committed checkpoint, and replay from it.
	ErrBroken = errors.New("state: an earlier checkpoint failed")

	// ErrCorrupt is returned when the file is damaged: by Open when the
	// file's structure does not check out, bbolt cannot open it, or Close
	// left a note that it was found damaged in use; by any other call when
	// bbolt met a page it could not read (DB.Damaged then reports it). The
	// runner moves the file aside (MoveAside) and recovers from an empty
	// state.
	ErrCorrupt = errors.New("state: file is damaged")

	// ErrKeySize is returned for an empty key or one longer than MaxKeySize.
	ErrKeySize = errors.New("state: key size out of range")

	// ErrValueSize is returned for a value longer than MaxValueSize.
	ErrValueSize = errors.New("state: value too large")

	// ErrTableName is returned for an invalid table name.
	ErrTableName = errors.New("state: invalid table name")

	// ErrTableTTL is returned when a table is opened twice in one DB with
	// different TTLs.
	ErrTableTTL = errors.New("state: table reopened with a different ttl")

	// ErrFull is returned by Put of a Memory store when the value would
	// take the store over its budget (Options.CacheBytes): Memory has no
	// file to evict to. The key keeps its old value; deleting keys, or
	// their TTL expiring, makes room.
	ErrFull = errors.New("state: store full")

	// ErrTableDropped is returned by the methods of a dropped table, and by
	// DB.Table for its name until the checkpoint that deletes it commits.
	ErrTableDropped = errors.New("state: table dropped")
)
