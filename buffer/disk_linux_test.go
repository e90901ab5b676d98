package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/testkit"
	"github.com/pspf/pspf-edge/internal/wait"
)

func TestFullDisk(t *testing.T) {
	for _, policy := range []Policy{Block, DropNewest, DropOldest} {
		t.Run(string(policy), func(t *testing.T) {
			dir := filepath.Join(testkit.MountTmpfs(t, "192k"), "log")
			// The cap is far above the disk: ENOSPC comes first.
			o := Options{SegmentBytes: 16 << 10, MaxBytes: 64 << 20, Overflow: policy}
			l := openT(t, dir, o)
			r, _ := l.Reader("sink")
			ctx := context.Background()
			var stored uint64
			var fullErr error
			for i := 0; i < 5000 && fullErr == nil; i++ {
				cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				_, err := l.Append(cctx, [][]byte{payload(stored + 1)})
				cancel()
				switch {
				case err == nil:
					stored++
				default:
					fullErr = err
				}
			}
			st := l.Stats()
			switch policy {
			case Block:
				if !errors.Is(fullErr, context.DeadlineExceeded) {
					t.Fatalf("full disk under block: got %v, want a wait ended by ctx", fullErr)
				}
				if st.Drops.Total() != 0 {
					t.Fatalf("drops under block: %+v", st.Drops)
				}
			case DropNewest:
				var ae *AppendError
				if !errors.As(fullErr, &ae) || ae.Reason != DropDiskFull || !errors.Is(fullErr, ErrFull) || !errors.Is(fullErr, syscall.ENOSPC) {
					t.Fatalf("full disk under drop_newest: got %v", fullErr)
				}
				for i := 0; i < 10; i++ {
					l.Append(ctx, [][]byte{payload(stored + 1)})
				}
				if got := l.Stats().Drops.DiskFull; got != 11 {
					t.Fatalf("disk_full drops: got %d, want 11", got)
				}
			case DropOldest:
				if fullErr != nil {
					t.Fatalf("drop_oldest should keep accepting: %v", fullErr)
				}
				if st.Drops.OverflowOldest == 0 {
					t.Fatal("drop_oldest on a full disk dropped nothing")
				}
			}
			if stored < 100 {
				t.Fatalf("stored only %d records", stored)
			}
			// What is on disk is intact and readable.
			first := l.Stats().FirstSeq
			readN(t, r, first, int(stored-first+1))
			if policy != DropOldest {
				// Space returns once the reader acks: appends work again.
				r.Ack(stored)
				wait.For(t, 5*time.Second, "the acked segments removed", func() bool { return l.Stats().Segments <= 1 })
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if _, err := l.Append(cctx, [][]byte{payload(stored + 1)}); err != nil {
					t.Fatalf("Append after space returned: %v", err)
				}
				readN(t, r, stored+1, 1)
			}
			if err := l.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Close: %v", err)
			}
			if vr, err := Verify(dir); err != nil || !vr.OK() {
				t.Fatalf("Verify: %+v %v", vr.Problems, err)
			}
		})
	}
}

func TestFullDiskBlockResumes(t *testing.T) {
	mnt := testkit.MountTmpfs(t, "256k")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 224<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	l := openT(t, filepath.Join(mnt, "log"), Options{SegmentBytes: 8 << 10, MaxBytes: 64 << 20})
	done := make(chan error, 1)
	go func() {
		var err error
		for i := uint64(1); i <= 2000 && err == nil; i++ {
			_, err = l.Append(context.Background(), [][]byte{payload(i)})
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("appends did not block on a full disk: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	os.Remove(filler)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("appends did not resume when space returned")
	}
	r, _ := l.Reader("r")
	readN(t, r, 1, 2000)
}

func TestReadOnlyDir(t *testing.T) {
	mnt := testkit.MountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "log")
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, 10, 5)
	l.Close()
	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	for _, d := range []string{dir, filepath.Join(mnt, "new")} {
		_, err := Open(d, Options{})
		if !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("Open(%s) on a read-only fs: got %v, want ErrReadOnly", d, err)
		}
	}
	// The offline tools still work.
	if rep, err := Inspect(dir); err != nil || rep.Records != 10 {
		t.Fatalf("Inspect read-only: %+v %v", rep, err)
	}
}

// A full disk is not silent: one WARN when appends begin to wait, the
// episode and the disk error in Stats while it lasts, one INFO when it is
// over, and the error cleared.
func TestFullDiskEpisode(t *testing.T) {
	mnt := testkit.MountTmpfs(t, "128k")
	o := Options{SegmentBytes: 16 << 10, MaxBytes: 64 << 20, AckInterval: 20 * time.Millisecond}
	lines := withLogLines(&o)
	l := openT(t, filepath.Join(mnt, "log"), o)
	setFullQuiet(l, 200*time.Millisecond)
	r, _ := l.Reader("sink")
	// Three times what the disk holds.
	done := make(chan error, 1)
	go func() {
		var err error
		for i := uint64(1); i <= 6000 && err == nil; i++ {
			_, err = l.Append(context.Background(), [][]byte{payload(i)})
		}
		done <- err
	}()
	wait.For(t, 5*time.Second, "the log to block", func() bool { return l.Stats().Full.Blocked })
	st := l.Stats()
	if st.Full.Reason != FullDiskFull || !errors.Is(st.Full.Err, syscall.ENOSPC) {
		t.Fatalf("full episode: got %+v, want disk_full with ENOSPC", st.Full)
	}
	if !errors.Is(st.LastError, syscall.ENOSPC) {
		t.Fatalf("last error while the disk is full: got %v, want ENOSPC", st.LastError)
	}
	// It stays blocked (retrying every 100 ms), and says so once. The
	// free space is read about once a second: some retries happened.
	wait.For(t, 5*time.Second, "the free space to fall below two segments", func() bool { return l.Stats().DiskFree < 2*o.SegmentBytes })
	if n := lines.Count(warnFull, "reason=disk_full", "policy=block", "no space left on device"); n != 1 {
		t.Fatalf("WARN lines for the full disk: got %d, want 1\n%s", n, lines)
	}
	if n := lines.Count(infoEnded); n != 0 {
		t.Fatalf("episode ended while blocked:\n%s", lines)
	}

	// The sink reads and acks every record: space returns, the appends
	// go on, the episode ends and the error is cleared. It acks up to the
	// last record, not only until the last Append returns: the episode
	// ends once two segments are free, and a sink that stopped acking
	// there would leave the disk as full as its lag (it did, under load).
	const total = 6000
	ctx := context.Background()
	appended := false
	for acked := uint64(0); acked < total; {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		recs, err := r.Read(rctx, nil, 0)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			if !appended {
				select {
				case err := <-done: // a failed Append ends the appends early
					if err != nil {
						t.Fatal(err)
					}
					appended = true
				default:
				}
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		acked = recs[len(recs)-1].Seq
		r.Ack(acked)
	}
	if !appended {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 5*time.Second, "the full episode to end", func() bool { return l.Stats().Full.Since.IsZero() })
	if n := lines.Count(infoEnded, "reason=disk_full", "blocked="); n != 1 {
		t.Fatalf("INFO lines for the end of the episode: got %d, want 1\n%s", n, lines)
	}
	if err := l.Stats().LastError; err != nil {
		t.Fatalf("last error after the episode: %v", err)
	}
	if n := lines.Count(warnFull); n != 1 {
		t.Fatalf("WARN lines: got %d, want 1\n%s", n, lines)
	}
}

// Under drop_oldest on a full disk, deleting a segment frees its space at
// once — also when the segment waits for its fsync round, or lagging
// readers hold it open — so the log drops one segment per full disk and
// never refuses a record.
func TestFullDiskDropOldestFreesAtOnce(t *testing.T) {
	mnt := testkit.MountTmpfs(t, "128k")
	dir := filepath.Join(mnt, "log")
	// A long fsync interval: sealed segments wait long for their round.
	o := Options{SegmentBytes: 16 << 10, MaxBytes: 64 << 20, Overflow: DropOldest, SyncInterval: time.Second}
	l := openT(t, dir, o)
	last := appendN(t, l, 1, 1000, 1)
	// Three lagging readers, each holding one of the first segments open.
	for i, upto := range []int{1, 300, 600} {
		r, _ := l.Reader(fmt.Sprintf("lag%d", i))
		readN(t, r, 1, upto)
	}
	ctx := context.Background()
	most := 0 // segments when the disk is full
	for n := 0; n < 3000; n++ {
		before := l.Stats()
		most = max(most, before.Segments)
		last++
		if _, err := l.Append(ctx, [][]byte{payload(last)}); err != nil {
			t.Fatalf("Append %d on a full disk: %v (segments %d, at most %d)", last, err, l.Stats().Segments, most)
		}
		after := l.Stats()
		if gone := before.Segments - after.Segments; gone > 1 {
			t.Fatalf("Append %d dropped %d segments (%d left, at most %d), want at most 1", last, gone, after.Segments, most)
		}
	}
	st := l.Stats()
	if st.Drops.OverflowOldest == 0 || st.Full.Reason != FullDiskFull {
		t.Fatalf("the disk never filled: %+v", st)
	}
	if st.Segments < most-1 {
		t.Fatalf("segments: %d left, %d when the disk filled", st.Segments, most)
	}
	r, _ := l.Reader("lag2")
	readN(t, r, st.FirstSeq, int(last-st.FirstSeq+1))
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if vr, err := Verify(dir); err != nil || !vr.OK() {
		t.Fatalf("Verify: %+v %v", vr.Problems, err)
	}
}
