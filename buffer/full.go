package buffer

import (
	"fmt"
	"time"
)

// FullReason says why a log is full.
type FullReason string

// Reasons a log is full.
const (
	// FullMaxBytes: the log holds Options.MaxBytes.
	FullMaxBytes FullReason = "max_bytes"
	// FullDiskFull: a write failed because the file system is full
	// (ENOSPC, or EDQUOT for a quota).
	FullDiskFull FullReason = "disk_full"
)

// fullQuiet is how long a full episode must go without an overflow (a
// wait, a drop or a refusal) before it is reported as over: a log that
// hovers at its cap is one episode, not one per segment.
const fullQuiet = 5 * time.Second

// freeEvery is how often upkeep asks the file system for its free space
// while it is short (freeShort) or a full episode is on; freeEveryRoomy
// otherwise. At 100 msg/s the statfs of a log and of its dead-letter log
// each second, cold, were 2-3 % of the agent's CPU in a perf profile.
const (
	freeEvery      = time.Second
	freeEveryRoomy = 10 * time.Second
)

// freeShort is the free space under which it is read every freeEvery: 256
// MiB or four segments, whichever is more. A log that writes faster than
// that in freeEveryRoomy meets a full disk as before: by its write error.
func (l *Log) freeShort() int64 { return max(256<<20, 4*l.opts.SegmentBytes) }

// FullStats describes the log's current full episode: from the first
// Append that met the cap (or a full disk) until the log has room again —
// 1.5 segments under the cap, or two segments free on the file system —
// and nothing overflowed for 5 s. Every episode is logged once when it
// begins (WARN: the reason and what the policy does) and once when it
// ends (INFO: its duration and totals).
type FullStats struct {
	// Since is when the episode began; zero when the log is not full.
	Since  time.Time
	Reason FullReason
	// Blocked is true while an Append waits for space (policy Block);
	// the log is then blocked since Since.
	Blocked bool
	// Dropped counts the records dropped (DropOldest: records no reader
	// had read) or refused (DropNewest, or a full disk under DropOldest
	// with nothing left to drop) during the episode.
	Dropped uint64
	// Err is the write error of a full disk, nil for FullMaxBytes.
	Err error
}

// episode is the state of the current full episode; see FullStats.
type episode struct {
	since    time.Time // zero: no episode
	last     time.Time // the last overflow
	reason   FullReason
	err      error
	waiting  int       // Appends waiting for space now
	waitFrom time.Time // when waiting went from 0 to 1
	blocked  time.Duration
	dropped  uint64 // unread records in dropped segments
	segments int    // segments dropped
	refused  uint64 // records refused
}

// fullLocked records an overflow: the log met its cap (cause nil) or a
// write failed with ENOSPC (cause). It starts an episode if none runs (or
// the reason changed), logging one WARN, and keeps l.lastErr on the disk
// error while the episode lasts. what and n say what the policy did, for
// the WARN; records dropped and refused are added by the caller.
func (l *Log) fullLocked(cause error, what string, n uint64) {
	reason := FullMaxBytes
	if cause != nil {
		reason = FullDiskFull
	}
	now := time.Now()
	ep := &l.full
	if !ep.since.IsZero() && ep.reason != reason {
		l.endFullLocked(now)
	}
	if cause != nil {
		ep.err = fmt.Errorf("buffer: disk full: %w", cause)
		l.lastErr = ep.err
	}
	ep.last = now
	if !ep.since.IsZero() {
		return
	}
	ep.since, ep.reason = now, reason
	if cause != nil {
		l.diskFree, l.freeAt = diskFree(l.dir), now // once per episode, for the WARN
	}
	attrs := []any{"reason", reason, "policy", l.opts.Overflow, "disk_bytes", l.diskBytes + l.mem.live(),
		"max_bytes", l.opts.MaxBytes, "disk_free", l.diskFree, "records", l.next - l.firstLocked()}
	if what != "" {
		attrs = append(attrs, what, n)
	}
	if cause != nil {
		attrs = append(attrs, "err", cause)
	}
	msg := "buffer: log full; appends wait until readers free space"
	switch l.opts.Overflow {
	case DropOldest:
		msg = "buffer: log full; dropping the oldest records"
	case DropNewest:
		msg = "buffer: log full; refusing new records"
	}
	l.log.Warn(msg, attrs...)
}

// waitLocked and unwaitLocked bracket an Append waiting for space.
func (l *Log) waitLocked() {
	if l.full.waiting == 0 {
		l.full.waitFrom = time.Now()
	}
	l.full.waiting++
}

func (l *Log) unwaitLocked() {
	l.full.waiting--
	l.full.last = time.Now() // the episode lasts at least as long as it blocks
	if l.full.waiting == 0 {
		l.full.blocked += time.Since(l.full.waitFrom)
		l.full.waitFrom = time.Time{}
	}
}

// checkFullLocked ends the episode once the log has room again and
// nothing overflowed for l.fullQuiet.
func (l *Log) checkFullLocked() {
	ep := &l.full
	if ep.since.IsZero() || ep.waiting > 0 {
		return
	}
	now := time.Now()
	if now.Sub(ep.last) < l.fullQuiet {
		return
	}
	switch ep.reason {
	case FullMaxBytes:
		if l.diskBytes+l.mem.live() > l.opts.MaxBytes-l.opts.SegmentBytes*3/2 {
			return
		}
	case FullDiskFull:
		if l.diskFree >= 0 && l.diskFree < 2*l.opts.SegmentBytes {
			return
		}
	}
	l.endFullLocked(now)
}

// endFullLocked logs the end of the episode with its totals and clears it.
func (l *Log) endFullLocked(now time.Time) {
	ep := &l.full
	blocked := ep.blocked
	if ep.waiting > 0 {
		blocked += now.Sub(ep.waitFrom)
	}
	l.log.Info("buffer: log no longer full", "reason", ep.reason, "policy", l.opts.Overflow,
		"duration", ep.last.Sub(ep.since).Round(time.Millisecond), "blocked", blocked.Round(time.Millisecond),
		"dropped", ep.dropped, "segments_dropped", ep.segments, "refused", ep.refused,
		"disk_bytes", l.diskBytes+l.mem.live(), "disk_free", l.diskFree)
	if ep.err != nil && l.lastErr == ep.err {
		l.lastErr = nil
	}
	waiting := ep.waiting
	*ep = episode{waiting: waiting}
	if waiting > 0 {
		ep.waitFrom = now
	}
}

// fullStatsLocked describes the episode for Stats.
func (l *Log) fullStatsLocked() FullStats {
	ep := &l.full
	if ep.since.IsZero() {
		return FullStats{}
	}
	return FullStats{Since: ep.since, Reason: ep.reason, Blocked: ep.waiting > 0,
		Dropped: ep.dropped + ep.refused, Err: ep.err}
}

// refreshFree asks the file system how much space is free, outside l.mu,
// if it is due (freeDueLocked).
func (l *Log) refreshFree() {
	l.mu.Lock()
	due := l.freeDueLocked(time.Now())
	l.mu.Unlock()
	if !due {
		return
	}
	free := diskFree(l.dir)
	l.mu.Lock()
	l.diskFree, l.freeAt = free, time.Now()
	l.mu.Unlock()
}

// freeDueLocked reports whether the free space is to be read again at now:
// freeEvery after the last read while it is short, unknown or a full
// episode is on, else freeEveryRoomy after.
func (l *Log) freeDueLocked(now time.Time) bool {
	since := now.Sub(l.freeAt)
	if since < freeEvery {
		return false
	}
	return since >= freeEveryRoomy || !l.full.since.IsZero() || l.diskFree < l.freeShort()
}
