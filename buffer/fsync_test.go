package buffer

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// TestFsyncFailureIsFinal injects one failed fsync: the records of that
// segment are never reported durable, the fsync is not retried on them,
// and new records go to a new segment that syncs normally.
func TestFsyncFailureIsFinal(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncInterval} {
		t.Run(string(mode), func(t *testing.T) {
			l := openT(t, t.TempDir(), Options{Sync: mode})
			var calls, failed atomic.Int32
			var failFile atomic.Pointer[os.File]
			l.fsyncHook = func(f *os.File) error {
				calls.Add(1)
				if failed.Load() == 0 {
					failed.Add(1)
					failFile.Store(f)
					return syscall.EIO
				}
				if f == failFile.Load() {
					t.Errorf("fsync retried on the segment whose fsync failed")
				}
				return f.Sync()
			}
			ctx := context.Background()
			last := appendN(t, l, 1, 10, 5)
			err := l.Sync(ctx, last)
			var se *SyncError
			if !errors.As(err, &se) || !errors.Is(err, ErrSyncFailed) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("Sync after failed fsync: got %v, want *SyncError wrapping EIO", err)
			}
			if se.First != 1 || se.Last != 10 {
				t.Fatalf("SyncError range: got %d-%d, want 1-10", se.First, se.Last)
			}
			if err := l.Sync(ctx, 3); !errors.Is(err, ErrSyncFailed) {
				t.Fatalf("later Sync for the same records: got %v, want ErrSyncFailed", err)
			}
			last = appendN(t, l, 11, 10, 5)
			if err := l.Sync(ctx, last); err != nil {
				t.Fatalf("Sync of records in the new segment: %v", err)
			}
			if st := l.Stats(); st.Segments < 2 || st.LastError == nil {
				t.Fatalf("after failure: %d segments, last error %v; want a new segment and the error", st.Segments, st.LastError)
			}
			if err := l.failedForLocked(11); err != nil && se.Segment == l.segs[len(l.segs)-1].num {
				t.Fatalf("new records landed in the failed segment: %v", err)
			}
			r, _ := l.Reader("r")
			readN(t, r, 1, 20)
		})
	}
}

func TestRemoveReader(t *testing.T) {
	o := Options{SegmentBytes: 1 << 10, MaxBytes: 1 << 20}
	l := openT(t, t.TempDir(), o)
	a, _ := l.Reader("a")
	l.Reader("stale")
	last := appendN(t, l, 1, 100, 10)
	readN(t, a, 1, 100)
	a.Ack(last)
	if err := l.RemoveReader("stale"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the segments the stale reader held removed", func() bool { return l.Stats().Segments == 1 })
	if n := len(l.Stats().Cursors); n != 1 {
		t.Fatalf("cursors: got %d, want 1", n)
	}
}

// TestIntervalFsyncRate checks the flash-wear promise of interval mode
// under a steady stream of appends: fsync rounds start every SyncInterval
// (start to start, so acks wait less), never more often. It runs in a
// synctest bubble: the stream and the rounds run on the bubble's clock, so
// the count does not depend on how busy the machine is.
func TestIntervalFsyncRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 20 * time.Millisecond
		l := openT(t, t.TempDir(), Options{Sync: SyncInterval, SyncInterval: interval})
		var calls atomic.Int32
		l.fsyncHook = func(f *os.File) error {
			calls.Add(1)
			return f.Sync()
		}
		start := time.Now()
		var seq uint64 = 1
		for time.Since(start) < 300*time.Millisecond {
			appendN(t, l, seq, 10, 10)
			seq += 10
			time.Sleep(time.Millisecond) // the stream's pace, on the bubble's clock
		}
		if err := l.Sync(context.Background(), seq-1); err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		// One round per interval while appends keep coming, never more
		// (the slack: the rounds' phase, and the Sync at the end).
		got, rounds := int(calls.Load()), int(elapsed/interval)
		if got < rounds-1 || got > rounds+2 {
			t.Fatalf("fsyncs in %v at interval %v: got %d, want %d..%d", elapsed, interval, got, rounds-1, rounds+2)
		}
	})
}
