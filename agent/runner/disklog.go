package runner

import (
	"log/slog"

	"github.com/pspf/pspf-edge/buffer"
)

// BufferOptions maps a pipeline's buffer config to the buffer package's options.
func BufferOptions(c BufferConfig, logger *slog.Logger) buffer.Options {
	return buffer.Options{
		Kind:         buffer.Kind(c.Kind),
		SegmentBytes: int64(c.SegmentBytes),
		MaxBytes:     int64(c.MaxBytes),
		MaxAge:       c.MaxAge,
		Overflow:     buffer.Policy(c.Overflow),
		Sync:         buffer.SyncMode(c.Sync),
		SyncInterval: c.SyncInterval,
		AckInterval:  c.AckInterval,
		MemoryBytes:  int64(c.MemoryBytes),
		Logger:       logger,
	}
}

// OpenDiskLog returns an OpenLogFunc over the buffer package: the durable
// segment log (or its memory-first variant) in the given directory.
func OpenDiskLog(logger *slog.Logger) OpenLogFunc {
	return func(dir string, c BufferConfig) (Log, error) {
		l, err := buffer.Open(dir, BufferOptions(c, logger.With("log", dir)))
		if err != nil {
			return nil, err
		}
		return &diskLog{l}, nil
	}
}

// diskLog adapts a *buffer.Log to Log.
type diskLog struct{ *buffer.Log }

// Reader returns the named cursor.
func (d *diskLog) Reader(name string) (LogReader, error) { return d.Log.Reader(name) }

// NextSeq returns the sequence after the last record appended (after a
// crash, the next record appended may get a higher one; see Log.NextSeq).
func (d *diskLog) NextSeq() uint64 { return d.Log.Stats().NextSeq }
