package buffer

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test with errors.Is; the typed errors below wrap them.
var (
	// ErrClosed is returned by every method called after Close (Stats excepted).
	ErrClosed = errors.New("buffer: log is closed")
	// ErrFull reports that records were not stored because the byte cap was
	// reached (or the disk is full) and the overflow policy dropped them.
	ErrFull = errors.New("buffer: full")
	// ErrRecordTooLarge reports a payload above Options.MaxRecordBytes.
	ErrRecordTooLarge = errors.New("buffer: record too large")
	// ErrLocked reports that another Log (in this or another process) holds
	// the directory.
	ErrLocked = errors.New("buffer: directory is in use by another log")
	// ErrReadOnly reports a directory the log cannot write to.
	ErrReadOnly = errors.New("buffer: directory is read-only")
	// ErrCorrupt reports bytes that fail the segment format checks.
	ErrCorrupt = errors.New("buffer: corrupt data")
	// ErrSyncFailed reports records whose fsync failed; they are never
	// reported durable.
	ErrSyncFailed = errors.New("buffer: fsync failed")
	// ErrOutOfRange reports a sequence number outside the retained records.
	ErrOutOfRange = errors.New("buffer: sequence out of range")
	// ErrInvalidOptions reports an Options value that breaks a rule.
	ErrInvalidOptions = errors.New("buffer: invalid options")
	// ErrInvalidName reports a reader name that cannot be used as a file name.
	ErrInvalidName = errors.New("buffer: invalid reader name")
)

// DropReason says why records were dropped; Stats counts drops per reason.
type DropReason string

// Drop reasons.
const (
	// DropOverflowOldest: whole oldest segments dropped under drop_oldest;
	// their records that no reader had read are counted.
	DropOverflowOldest DropReason = "overflow_oldest"
	// DropOverflowNewest: new records refused under drop_newest.
	DropOverflowNewest DropReason = "overflow_newest"
	// DropAge: segments older than Options.MaxAge dropped; their records
	// that no reader had read are counted.
	DropAge DropReason = "age"
	// DropDiskFull: new records refused because the disk was full (ENOSPC)
	// and the policy is not block.
	DropDiskFull DropReason = "disk_full"
)

// AppendError reports an Append that stored only the first Accepted records
// of its batch. The rest were either dropped by the overflow policy (Reason
// set, errors.Is(err, ErrFull) is true) or not attempted because of Err
// (context cancelled, log closed, I/O error).
type AppendError struct {
	Accepted int        // payloads[:Accepted] were stored
	Dropped  int        // records counted as dropped (0 when Reason is "")
	Reason   DropReason // why the rest were dropped; "" if not dropped
	Err      error      // underlying cause, may be nil when Reason is set
}

// Error describes the failure; see the type's doc.
func (e *AppendError) Error() string {
	switch {
	case e.Reason != "" && e.Err != nil:
		return fmt.Sprintf("buffer: append: stored %d, dropped %d (%s): %v", e.Accepted, e.Dropped, e.Reason, e.Err)
	case e.Reason != "":
		return fmt.Sprintf("buffer: append: stored %d, dropped %d (%s)", e.Accepted, e.Dropped, e.Reason)
	default:
		return fmt.Sprintf("buffer: append: stored %d: %v", e.Accepted, e.Err)
	}
}

// Unwrap returns ErrFull when records were dropped, and the cause.
func (e *AppendError) Unwrap() []error {
	var errs []error
	if e.Reason != "" {
		errs = append(errs, ErrFull)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// RecordTooLargeError reports the first payload of a batch above the limit.
// Nothing of the batch was stored.
type RecordTooLargeError struct {
	Index int // position in the batch
	Size  int // payload bytes
	Max   int // Options.MaxRecordBytes
}

// Error describes the failure; see the type's doc.
func (e *RecordTooLargeError) Error() string {
	return fmt.Sprintf("buffer: append: record %d is %d bytes, max is %d", e.Index, e.Size, e.Max)
}

// Unwrap returns ErrRecordTooLarge.
func (e *RecordTooLargeError) Unwrap() error { return ErrRecordTooLarge }

// SyncError reports that the fsync of a segment failed. The records First
// to Last of that segment are never reported durable; every Sync covering
// them returns this error.
type SyncError struct {
	Segment     uint64
	First, Last uint64
	Err         error
}

// Error describes the failure; see the type's doc.
func (e *SyncError) Error() string {
	return fmt.Sprintf("buffer: fsync segment %d (records %d-%d): %v", e.Segment, e.First, e.Last, e.Err)
}

// Unwrap returns ErrSyncFailed and the cause.
func (e *SyncError) Unwrap() []error { return []error{ErrSyncFailed, e.Err} }

// CorruptError says what is wrong where in a segment file.
type CorruptError struct {
	Path   string // segment file
	Offset int64  // byte offset of the bad frame or header
	Seq    uint64 // sequence expected at Offset (0 if unknown)
	Reason string // what check failed
}

// Error describes the failure; see the type's doc.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("buffer: %s: offset %d (seq %d): %s", e.Path, e.Offset, e.Seq, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// RangeError reports a sequence outside the retained range [First, Next].
type RangeError struct {
	Op          string
	Seq         uint64
	First, Next uint64
}

// Error describes the failure; see the type's doc.
func (e *RangeError) Error() string {
	return fmt.Sprintf("buffer: %s %d: outside retained records %d..%d", e.Op, e.Seq, e.First, e.Next)
}

// Unwrap returns ErrOutOfRange.
func (e *RangeError) Unwrap() error { return ErrOutOfRange }

// OptionError names an option, its value and the rule it breaks.
type OptionError struct {
	Field string
	Value any
	Rule  string
}

// Error describes the failure; see the type's doc.
func (e *OptionError) Error() string {
	return fmt.Sprintf("buffer: options: %s: %s, got %v", e.Field, e.Rule, e.Value)
}

// Unwrap returns ErrInvalidOptions.
func (e *OptionError) Unwrap() error { return ErrInvalidOptions }
