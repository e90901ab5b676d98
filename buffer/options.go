package buffer

import (
	"io"
	"log/slog"
	"time"
)

// SyncMode says when appended records are fsynced.
type SyncMode string

// Sync modes.
const (
	// SyncBatch fsyncs when Sync is called; concurrent callers share one
	// fsync (group commit).
	SyncBatch SyncMode = "batch"
	// SyncInterval fsyncs every Options.SyncInterval; Sync waits for it.
	SyncInterval SyncMode = "interval"
	// SyncNone never waits for fsync: Sync returns at once. Records survive a
	// process crash (they are in the page cache) but not a power cut.
	SyncNone SyncMode = "none"
)

// Policy says what Append does when the log is at its byte cap.
type Policy string

// Overflow policies.
const (
	// Block makes Append wait until readers free space (or ctx ends).
	Block Policy = "block"
	// DropOldest deletes whole oldest segments to make room.
	DropOldest Policy = "drop_oldest"
	// DropNewest refuses the records that do not fit.
	DropNewest Policy = "drop_newest"
)

// Kind says where records live before they are read.
type Kind string

// Log kinds.
const (
	// Disk writes every record to a segment file on Append.
	Disk Kind = "disk"
	// Memory keeps records in memory up to Options.MemoryBytes and writes
	// to segments only beyond it and on Close. A crash loses the records
	// held only in memory; records acked by every reader while in memory
	// are never written (less flash wear).
	Memory Kind = "memory"
)

// Defaults and hard limits.
const (
	DefaultSegmentBytes   = 16 << 20
	DefaultMaxBytes       = 256 << 20
	DefaultSyncInterval   = time.Second
	DefaultMaxRecordBytes = 1 << 20
	DefaultMemoryBytes    = 8 << 20
	DefaultAckInterval    = time.Second

	minSegmentBytes   = 1 << 10
	maxSegmentBytes   = 1 << 30
	maxRecordLimit    = 64 << 20
	minSyncInterval   = time.Millisecond
	minMaxBytesFactor = 2
)

// Options configures a Log. Zero fields take the documented defaults.
type Options struct {
	// Kind is Disk (default) or Memory.
	Kind Kind
	// SegmentBytes is the size at which the active segment is sealed and a
	// new one started (default 16 MiB, or MaxBytes/4 when that is smaller
	// and SegmentBytes is unset). Space is reclaimed a whole segment at a
	// time, so it bounds both the granularity of deletion and the work of
	// the recovery scan of the tail on Open. Range 1 KiB..1 GiB.
	SegmentBytes int64
	// MaxBytes caps the bytes the log holds (segment files plus, for Memory,
	// the records in memory), default 256 MiB. It must be at least twice
	// SegmentBytes (plus MemoryBytes for Memory) so that dropping the
	// oldest sealed segment can always make room.
	MaxBytes int64
	// MaxAge drops segments whose records are all older than it (0: no age
	// limit). Records carry no timestamp; a segment's header holds its
	// creation time, so a record may live up to about 1.5×MaxAge (the
	// active segment is sealed once it is MaxAge/2 old).
	MaxAge time.Duration
	// Overflow is the policy at the cap: Block (default), DropOldest,
	// DropNewest. A full disk (ENOSPC) is handled the same way.
	Overflow Policy
	// Sync is Interval (default), Batch or None.
	Sync SyncMode
	// SyncInterval bounds, in SyncInterval mode, how long a record waits
	// for its fsync: a round starts SyncInterval after the first write it
	// covers at the latest (default 1 s). It starts sooner once 256 KiB
	// wait, and while a Sync caller waits, once 32 KiB wait, the Appends
	// pause for eight times their usual gap (writers that wait for their
	// acks append nothing more), or the last two gaps between Appends were
	// each longer than the time left and than SyncInterval/8 (a writer
	// that hands over a batch about once per SyncInterval: the next one
	// would come too late to share the fsync). A slow stream thus gets one
	// fsync per SyncInterval, and each fsync rewrites at least the page it
	// ends in, so a longer interval means fewer, fuller writes to the
	// flash; records not yet fsynced are lost by a power cut (not by a
	// crash of the process). In Batch mode it is how long sealed segments and the
	// directory wait for their fsync. Minimum 1 ms.
	SyncInterval time.Duration
	// AckInterval is how often a reader's acked position (its cursor) is
	// written to disk while it moves by 1,000 records or more per interval
	// (default 1 s); a smaller move is written ten intervals after the
	// last write, and every position on Close. Each write costs a page of
	// flash. A crash makes a reader send again at most 1,000 records or
	// those it acked in the last AckInterval, whichever is more (plus what
	// it had read but not acked), which at-least-once delivery allows.
	AckInterval time.Duration
	// MaxRecordBytes is the largest payload (default 1 MiB, or what fits in
	// a segment if smaller). Lengths read from disk are checked against it
	// before any allocation, so a corrupt length cannot exhaust memory.
	// At most 64 MiB. Do not lower it below the size of records already
	// stored: they would read as damaged.
	MaxRecordBytes int
	// MemoryBytes is the budget of records held in memory by the Memory
	// kind (default 8 MiB); ignored for Disk.
	MemoryBytes int64
	// Logger receives recovery and error reports (nil: discard).
	Logger *slog.Logger
	// Now returns the wall-clock time for segment headers and MaxAge
	// (nil: time.Now). For tests.
	Now func() time.Time
}

// Validate reports whether Open would accept o, without touching a file: nil,
// or an *OptionError (wrapping ErrInvalidOptions) naming the first option Open
// would refuse and its rule. Zero fields are checked as the defaults Open
// would put in their place. Config loaders call it so that a bad combination,
// such as MaxBytes below twice SegmentBytes, is reported before the agent
// starts.
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

// withDefaults validates o and fills in defaults, in one place.
func (o Options) withDefaults() (Options, error) {
	if o.Kind == "" {
		o.Kind = Disk
	}
	if o.Kind != Disk && o.Kind != Memory {
		return o, &OptionError{"kind", o.Kind, "must be disk or memory"}
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Kind == Memory && o.MemoryBytes == 0 {
		o.MemoryBytes = min(int64(DefaultMemoryBytes), o.MaxBytes/4)
	}
	if o.Kind == Disk {
		o.MemoryBytes = 0
	}
	if o.MemoryBytes < 0 {
		return o, &OptionError{"memory_bytes", o.MemoryBytes, "must not be negative"}
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = max(minSegmentBytes, min(DefaultSegmentBytes, (o.MaxBytes-o.MemoryBytes)/4))
	}
	if o.SegmentBytes < minSegmentBytes || o.SegmentBytes > maxSegmentBytes {
		return o, &OptionError{"segment_bytes", o.SegmentBytes, "must be between 1 KiB and 1 GiB"}
	}
	if o.MaxBytes < minMaxBytesFactor*o.SegmentBytes+o.MemoryBytes {
		return o, &OptionError{"max_bytes", o.MaxBytes, "must be at least 2×segment_bytes (+memory_bytes for memory kind)"}
	}
	if o.MaxAge < 0 {
		return o, &OptionError{"max_age", o.MaxAge, "must not be negative"}
	}
	switch o.Overflow {
	case "":
		o.Overflow = Block
	case Block, DropOldest, DropNewest:
	default:
		return o, &OptionError{"overflow", o.Overflow, "must be block, drop_oldest or drop_newest"}
	}
	switch o.Sync {
	case "":
		o.Sync = SyncInterval
	case SyncBatch, SyncInterval, SyncNone:
	default:
		return o, &OptionError{"sync", o.Sync, "must be batch, interval or none"}
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.SyncInterval < minSyncInterval {
		return o, &OptionError{"sync_interval", o.SyncInterval, "must be at least 1ms"}
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.AckInterval < minSyncInterval {
		return o, &OptionError{"ack_interval", o.AckInterval, "must be at least 1ms"}
	}
	segCap := int(min(o.SegmentBytes-headerSize-frameOverhead, maxRecordLimit))
	if o.Kind == Memory {
		segCap = min(segCap, int(o.MemoryBytes-frameOverhead))
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = min(DefaultMaxRecordBytes, segCap)
	}
	if o.MaxRecordBytes < 1 || o.MaxRecordBytes > segCap {
		return o, &OptionError{"max_record_bytes", o.MaxRecordBytes, "must be between 1 and what fits in a segment (and in memory_bytes for memory kind; at most 64 MiB)"}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}
