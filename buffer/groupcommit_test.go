package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestIdleLogArmsNoTimer: once its records are fsynced and its cursors
// written, a log sleeps until something happens. An hour on the bubble's
// clock passes without a single wake-up of upkeep, in every sync mode
// (before the adaptive group commit it woke once a second).
func TestIdleLogArmsNoTimer(t *testing.T) {
	for _, mode := range []SyncMode{SyncInterval, SyncBatch, SyncNone} {
		t.Run(string(mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := openT(t, t.TempDir(), Options{Sync: mode, SyncInterval: 100 * time.Millisecond})
				r, err := l.Reader("sink")
				if err != nil {
					t.Fatal(err)
				}
				last := appendN(t, l, 1, 50, 10)
				if err := l.Sync(context.Background(), last); err != nil {
					t.Fatal(err)
				}
				readAll(t, l, "sink")
				if err := r.Ack(last); err != nil {
					t.Fatal(err)
				}
				// The cursor is written AckInterval after the last write
				// of it at the latest.
				time.Sleep(2 * DefaultAckInterval)
				synctest.Wait()
				before := l.wakes.Load()
				time.Sleep(time.Hour)
				synctest.Wait()
				if got := l.wakes.Load() - before; got != 0 {
					t.Fatalf("upkeep woke %d times in an idle hour, want 0", got)
				}
				if st := l.Stats(); st.DurableSeq != last && mode != SyncNone {
					t.Fatalf("durable %d, want %d", st.DurableSeq, last)
				}
			})
		})
	}
}

// TestIdleLogWithMaxAgeWakes: MaxAge is a feature that watches the clock;
// with records held, upkeep wakes for it (and drops them in time).
func TestIdleLogWithMaxAgeWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := openT(t, t.TempDir(), Options{MaxAge: time.Minute, SegmentBytes: 1 << 10, MaxBytes: 1 << 20})
		last := appendN(t, l, 1, 50, 10)
		if err := l.Sync(context.Background(), last); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if st := l.Stats(); st.Drops.Age == 0 {
			t.Fatalf("no record dropped by age after 5 minutes with max_age 1m: %+v", st.Drops)
		}
	})
}

// TestGroupCommitWaitsForPausedWriters: a writer that appends, then waits
// for its Sync (like a source whose broker sends no more until its acks)
// gets its fsync once the Appends pause, not at the end of a long
// SyncInterval; each fsync covers everything appended before the pause.
func TestGroupCommitWaitsForPausedWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		l := openT(t, t.TempDir(), Options{SyncInterval: interval})
		var fsyncs atomic.Int32
		l.fsyncHook = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
		ctx := context.Background()
		seq := uint64(1)
		const cycles = 20
		var waited time.Duration
		for range cycles {
			// 20 messages 10 ms apart, then nothing until they are acked.
			var last uint64
			for range 20 {
				var err error
				if last, err = l.Append(ctx, [][]byte{payload(seq)}); err != nil {
					t.Fatal(err)
				}
				seq++
				time.Sleep(10 * time.Millisecond)
			}
			start := time.Now()
			if err := l.Sync(ctx, last); err != nil {
				t.Fatal(err)
			}
			waited = max(waited, time.Since(start))
		}
		// The pace is 10 ms: the pause is seen after 40 ms, far from the
		// 1 s bound.
		if waited > interval/10 {
			t.Fatalf("a paused writer waited up to %v for its fsync, want <= %v", waited, interval/10)
		}
		if got := fsyncs.Load(); got > cycles+1 {
			t.Fatalf("%d fsyncs for %d cycles of 20 records, want at most %d", got, cycles, cycles+1)
		}
	})
}

// TestGroupCommitSmallWindowWaitsLittle: a writer whose ack window holds
// two Appends (an MQTT source at max rate: a batch, another a millisecond
// later, then nothing until both are acked) waits for each fsync about as
// long as the pause detection needs, not for SyncInterval, from the first
// window after an idle start on, and keeps doing so. Its wait for the
// fsync is the log's, not the stream's pace: when the log learned it as
// the pace (from a slow start, the version before this test), the writer
// waited up to 1 s for each of 200 windows and got 22k records/s instead
// of 82k in the end-to-end benchmark (mosquitto max_inflight_messages 20).
func TestGroupCommitSmallWindowWaitsLittle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		l := openT(t, t.TempDir(), Options{SyncInterval: interval})
		ctx := context.Background()
		seq := uint64(1)
		const windows = 200
		var worst, total time.Duration
		for range windows {
			var last uint64
			for i := range 2 {
				if i > 0 {
					time.Sleep(time.Millisecond)
				}
				var err error
				if last, err = l.Append(ctx, [][]byte{payload(seq), payload(seq + 1)}); err != nil {
					t.Fatal(err)
				}
				seq += 2
			}
			start := time.Now()
			if err := l.Sync(ctx, last); err != nil {
				t.Fatal(err)
			}
			w := time.Since(start)
			worst, total = max(worst, w), total+w
		}
		// The pace within a window is 1 ms: a pause is seen after 8 ms
		// at most.
		if avg := total / windows; avg > 10*time.Millisecond || worst > interval/10 {
			t.Fatalf("a writer with a window of two Appends waited %v per fsync on average, %v at worst; want <= 10ms and <= %v", avg, worst, interval/10)
		}
	})
}

// TestGroupCommitSteadyStreamWaitsForInterval: a steady stream whose
// writer does not pause (the acks it waits for do not stop its input) is
// fsynced once per SyncInterval, not per record: fewer, fuller fsyncs at a
// low rate, and no record waits longer than the interval (plus the round).
func TestGroupCommitSteadyStreamWaitsForInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 500 * time.Millisecond
		l := openT(t, t.TempDir(), Options{SyncInterval: interval})
		var fsyncs atomic.Int32
		l.fsyncHook = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
		ctx := context.Background()
		type appended struct {
			seq uint64
			at  time.Time
		}
		commits := make(chan appended, 1024)
		var worst time.Duration
		done := make(chan struct{})
		go func() { // the committer: Sync each batch, note its wait
			defer close(done)
			for a := range commits {
				if err := l.Sync(ctx, a.seq); err != nil {
					t.Error(err)
					return
				}
				worst = max(worst, time.Since(a.at))
			}
		}()
		const d, warm = 5 * time.Second, time.Second
		start := time.Now()
		var warmFsyncs int32 = -1
		for seq := uint64(1); time.Since(start) < d; seq++ { // 100 msg/s
			if warmFsyncs < 0 && time.Since(start) >= warm {
				// The first few records are fsynced one by one while the
				// log learns the pace; count from here.
				warmFsyncs = fsyncs.Load()
			}
			last, err := l.Append(ctx, [][]byte{payload(seq)})
			if err != nil {
				t.Fatal(err)
			}
			commits <- appended{last, time.Now()}
			time.Sleep(10 * time.Millisecond)
		}
		close(commits)
		<-done
		if worst > interval+10*time.Millisecond {
			t.Fatalf("a record waited %v for its fsync, want <= %v", worst, interval)
		}
		rounds := int((d - warm) / interval)
		if got := int(fsyncs.Load() - warmFsyncs); got > rounds+2 {
			t.Fatalf("%d fsyncs in %v of 100 msg/s at sync_interval %v, want at most %d", got, d-warm, interval, rounds+2)
		}
	})
}

// TestGroupCommitRandomArrivalsWaitForInterval: records from many
// independent publishers arrive at random (exponential gaps, 100 msg/s on
// average), and the writer never waits for its acks. A random stream has
// gaps of several times its mean now and then (one in 55 gaps is over four
// means); none of them is a writer waiting for its fsync, so the log must
// not fsync for them: about one fsync per SyncInterval, as for a steady
// stream, since each fsync rewrites a page of flash. With a pause
// threshold of four mean gaps it fsynced 212 times in 58 s; with eight,
// 66.
func TestGroupCommitRandomArrivalsWaitForInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		l := openT(t, t.TempDir(), Options{SyncInterval: interval})
		var fsyncs atomic.Int32
		l.fsyncHook = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
		ctx := context.Background()
		commits, done := startCommitter(t, l)
		rng := rand.New(rand.NewPCG(7, 25))
		const d, warm = 60 * time.Second, 2 * time.Second
		start := time.Now()
		var warmFsyncs int32 = -1
		for seq := uint64(1); time.Since(start) < d; seq++ {
			if warmFsyncs < 0 && time.Since(start) >= warm {
				warmFsyncs = fsyncs.Load()
			}
			last, err := l.Append(ctx, [][]byte{payload(seq)})
			if err != nil {
				t.Fatal(err)
			}
			commits <- last
			time.Sleep(time.Duration(rng.ExpFloat64() * float64(10*time.Millisecond)))
		}
		close(commits)
		<-done
		// One per interval, and a wide margin for the rare gap that
		// still looks like a pause.
		rounds := int((d - warm) / interval)
		if got := int(fsyncs.Load() - warmFsyncs); got > rounds*3/2 {
			t.Fatalf("%d fsyncs in %v of random arrivals at 100 msg/s, sync_interval %v: want at most %d", got, d-warm, interval, rounds*3/2)
		}
	})
}

// TestGroupCommitNoRampAfterIdle: a stream that starts (on a new log, or
// after the log was idle for longer than SyncInterval) gets about one
// fsync per SyncInterval from its first record on, whatever the pace of
// the stream before the pause. The log used to start from the fastest pace
// when it knew none (or from the old stream's), took each record's wait
// for its fsync for a pause and fsynced records one by one while it learned
// the new pace: about ten fsyncs at the start of a 100 msg/s stream in the
// end-to-end benchmark; 19 here, now 11.
func TestGroupCommitNoRampAfterIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		l := openT(t, t.TempDir(), Options{SyncInterval: interval})
		var fsyncs atomic.Int32
		l.fsyncHook = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
		ctx := context.Background()
		commits, done := startCommitter(t, l)
		seq := uint64(1)
		const d = 3 * time.Second
		gaps := []time.Duration{10 * time.Millisecond, time.Millisecond, 10 * time.Millisecond}
		for _, gap := range gaps { // 100 msg/s, 1,000, 100
			start := time.Now()
			for ; time.Since(start) < d; seq++ {
				last, err := l.Append(ctx, [][]byte{payload(seq)})
				if err != nil {
					t.Fatal(err)
				}
				commits <- last
				time.Sleep(gap)
			}
			time.Sleep(10 * time.Second) // idle
		}
		close(commits)
		<-done
		if got, want := int(fsyncs.Load()), len(gaps)*(int(d/interval)+2); got > want {
			t.Fatalf("%d fsyncs for %d streams of %v, sync_interval %v: want at most %d", got, len(gaps), d, interval, want)
		}
	})
}

// TestGroupCommitFillsPages: 256 KiB waiting are fsynced at once, without
// waiting for the interval.
func TestGroupCommitFillsPages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := openT(t, t.TempDir(), Options{SyncInterval: time.Minute})
		big := make([]byte, 64<<10)
		var last uint64
		for range 5 {
			var err error
			if last, err = l.Append(context.Background(), [][]byte{big}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if st := l.Stats(); st.DurableSeq < last-1 {
			t.Fatalf("durable %d after 320 KiB, want >= %d without waiting for the 1m interval", st.DurableSeq, last-1)
		}
	})
}

// TestPowerCutKeepsSyncedRecords: a writer and a committer (append, then
// Sync before the ack, as the runner does) through the adaptive group
// commit, with bursts, pauses and a steady pace. The power-cut image keeps
// of each segment only what an fsync had covered (what was in the file
// when the fsync began); every record whose Sync returned must be in it,
// with its payload.
func TestPowerCutKeepsSyncedRecords(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			dir := t.TempDir()
			l := openT(t, dir, Options{SyncInterval: 30 * time.Millisecond, SegmentBytes: 16 << 10, MaxBytes: 64 << 20})
			var mu sync.Mutex
			synced := map[string]int64{} // segment file -> bytes an fsync covered
			l.fsyncHook = func(f *os.File) error {
				fi, err := f.Stat()
				if err != nil {
					return err
				}
				if err := f.Sync(); err != nil {
					return err
				}
				mu.Lock()
				synced[filepath.Base(f.Name())] = max(synced[filepath.Base(f.Name())], fi.Size())
				mu.Unlock()
				return nil
			}
			ctx := context.Background()
			commits := make(chan uint64, 64)
			var acked atomic.Uint64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for last := range commits {
					for more := true; more; {
						select {
						case l2, ok := <-commits:
							if !ok {
								more = false
								break
							}
							last = max(last, l2)
						default:
							more = false
						}
					}
					if err := l.Sync(ctx, last); err != nil {
						t.Error(err)
						return
					}
					acked.Store(last)
				}
			}()
			rng := rand.New(rand.NewPCG(seed, 3))
			want := map[uint64]string{}
			seq := uint64(0)
			deadline := time.Now().Add(600 * time.Millisecond)
			for time.Now().Before(deadline) {
				n := 1 + rng.IntN(30)
				ps := make([][]byte, n)
				for i := range ps {
					ps[i] = fmt.Appendf(nil, "p%d-%d-%s", seed, seq+uint64(i)+1, strings.Repeat("x", rng.IntN(200)))
				}
				last, err := l.Append(ctx, ps)
				if err != nil {
					t.Fatal(err)
				}
				for i, p := range ps {
					want[last-uint64(n-1-i)] = string(p)
				}
				seq = last
				commits <- last
				switch rng.IntN(4) {
				case 0: // a burst
				case 1:
					time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
				default:
					time.Sleep(time.Duration(5+rng.IntN(60)) * time.Millisecond)
				}
			}
			close(commits)
			<-done
			upto := acked.Load()
			if upto == 0 {
				t.Fatal("nothing was acked")
			}

			// The image: what a power cut now would leave.
			img := t.TempDir()
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			for _, e := range ents {
				name := e.Name()
				if name == lockName {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if strings.HasSuffix(name, segSuffix) {
					n, ok := synced[name]
					if !ok {
						continue // never fsynced: the power cut takes it
					}
					b = b[:min(int64(len(b)), n)]
				}
				if err := os.WriteFile(filepath.Join(img, name), b, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			mu.Unlock()
			l2, err := Open(img, Options{SegmentBytes: 16 << 10, MaxBytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()
			r, err := l2.Reader("check")
			if err != nil {
				t.Fatal(err)
			}
			got := map[uint64]string{}
			buf := make([]Record, 0, 1000)
			for {
				l2.mu.Lock()
				done := r.next >= l2.next
				l2.mu.Unlock()
				if done {
					break
				}
				recs, err := r.Read(ctx, buf, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				for _, rec := range recs {
					got[rec.Seq] = string(rec.Payload)
				}
			}
			for s := uint64(1); s <= upto; s++ {
				if got[s] != want[s] {
					t.Fatalf("record %d was acked (durable up to %d) and is %q after the power cut, want %q", s, upto, got[s], want[s])
				}
			}
		})
	}
}

// TestBatchSyncAfterRoundStillLocked: a batch-mode Sync that arrives after
// a round closed its done channel but before that round released the
// lock must not wait for a round nobody starts. It once did (the suite
// hung for 20 minutes in CI): it found the lock taken, waited on the new
// done channel, and no other caller came.
func TestBatchSyncAfterRoundStillLocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := openT(t, t.TempDir(), Options{Sync: SyncBatch})
		last, err := l.Append(context.Background(), [][]byte{payload(1)})
		if err != nil {
			t.Fatal(err)
		}
		l.syncSem <- struct{}{} // a round that has closed done and not yet unlocked
		res := make(chan error, 1)
		go func() { res <- l.Sync(context.Background(), last) }()
		synctest.Wait()
		select {
		case err := <-res:
			t.Fatalf("Sync returned %v before any round covered its record", err)
		default:
		}
		<-l.syncSem // that round ends
		if err := <-res; err != nil {
			t.Fatal(err)
		}
		if st := l.Stats(); st.DurableSeq != last {
			t.Fatalf("durable %d, want %d", st.DurableSeq, last)
		}
	})
}

// startCommitter starts the committer of the group-commit tests: it Syncs
// up to the last sequence sent on commits whenever it gets to it, and
// closes done once commits is closed and drained (or a Sync failed).
func startCommitter(t *testing.T, l *Log) (chan<- uint64, <-chan struct{}) {
	commits := make(chan uint64, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for last := range commits {
			for len(commits) > 0 {
				last = <-commits
			}
			if err := l.Sync(context.Background(), last); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	return commits, done
}

// TestGroupCommitSlowBatchesSyncAtOnce: a writer that hands over a batch a
// little more than SyncInterval apart (an MQTT source with linger: 1s)
// gets each fsync as soon as it waits for it, once two gaps showed the
// pace, not at the deadline: no other Append is expected before the
// deadline, so waiting would cover nothing more. (Before, each fsync came
// SyncInterval after its batch, a wake-up of its own, and the ack that
// late.) Still one fsync per batch, no more.
func TestGroupCommitSlowBatchesSyncAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, pace = time.Second, time.Second + 5*time.Millisecond
		l := openT(t, t.TempDir(), Options{SyncInterval: interval})
		var fsyncs atomic.Int32
		l.fsyncHook = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
		ctx := context.Background()
		seq := uint64(1)
		const batches = 10
		var waits []time.Duration
		for range batches {
			start := time.Now()
			batch := make([][]byte, 100)
			for i := range batch {
				batch[i] = payload(seq)
				seq++
			}
			last, err := l.Append(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(ctx, last); err != nil {
				t.Fatal(err)
			}
			waits = append(waits, time.Since(start))
			time.Sleep(pace - time.Since(start))
		}
		for i, w := range waits[2:] {
			if w != 0 {
				t.Errorf("batch %d waited %v for its fsync, want 0 (waits %v)", i+2, w, waits)
				break
			}
		}
		if got := fsyncs.Load(); got > batches {
			t.Fatalf("%d fsyncs for %d batches, want at most %d", got, batches, batches)
		}
	})
}

// TestGroupCommitRandomStreamNotSyncedPerAppend: a random stream of single
// records, 100 a second, whose writer waits for each fsync from another
// goroutine (the commit), is still fsynced about once per SyncInterval:
// two gaps longer than the time left to the deadline in a row are too rare
// in it to fsync early.
func TestGroupCommitRandomStreamNotSyncedPerAppend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := openT(t, t.TempDir(), Options{SyncInterval: time.Second})
		var fsyncs atomic.Int32
		l.fsyncHook = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(1, 2))
		var wg sync.WaitGroup
		const seconds = 20
		end := time.Now().Add(seconds * time.Second)
		for seq := uint64(1); time.Now().Before(end); seq++ {
			last, err := l.Append(ctx, [][]byte{payload(seq)})
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				if err := l.Sync(ctx, last); err != nil {
					t.Error(err)
				}
			})
			time.Sleep(time.Duration(rng.ExpFloat64() * float64(10*time.Millisecond)))
		}
		wg.Wait()
		if got := fsyncs.Load(); got > seconds*3/2 {
			t.Fatalf("%d fsyncs in %d s of a random 100/s stream, want at most %d", got, seconds, seconds*3/2)
		}
	})
}
