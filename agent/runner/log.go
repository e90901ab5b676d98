package runner

import (
	"context"

	"github.com/pspf/pspf-edge/buffer"
)

// Log is the durable, append-only record log a pipeline writes after its
// stateless operators and its sinks read from. The buffer package provides the
// real one, opened by OpenDiskLog. Payloads are msgp-encoded
// agent.Records.
type Log interface {
	// Append copies payloads to the log and returns the sequence number of the
	// last one. It may block while the log is full (overflow policy block).
	Append(ctx context.Context, payloads [][]byte) (last uint64, err error)
	// Sync returns once every record up to upto is durable.
	Sync(ctx context.Context, upto uint64) error
	// Reader returns the named, persistent reader cursor.
	Reader(name string) (LogReader, error)
	// NextSeq is the sequence number after the last record appended: the
	// next appended record gets it, or a higher one. Sequences only grow,
	// but may skip (records lost to damage, or sequences a crash left
	// unused: the buffer package never gives one to two records).
	NextSeq() uint64
	// Close flushes and closes the log.
	Close() error
}

// LogReader reads a Log from a persistent cursor.
type LogReader interface {
	// Read appends up to cap(buf) records (and at most about maxBytes of
	// payload) to buf[:0] and returns it; it blocks until there is at least
	// one or ctx is done. Payloads are valid until the next Read.
	Read(ctx context.Context, buf []LogRecord, maxBytes int) ([]LogRecord, error)
	// Ack records that everything up to seq has been processed.
	Ack(seq uint64) error
}

// LogRecord is one record read from a Log: its sequence and payload.
type LogRecord = buffer.Record

// OpenLogFunc opens (creating if needed) the log kept in dir.
type OpenLogFunc func(dir string, cfg BufferConfig) (Log, error)
