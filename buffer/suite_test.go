package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// kinds runs f once per buffer kind: every kind must pass the suite.
func kinds(t *testing.T, f func(t *testing.T, base Options)) {
	t.Helper()
	for _, k := range []Kind{Disk, Memory} {
		t.Run(string(k), func(t *testing.T) {
			o := Options{Kind: k}
			if k == Memory {
				o.MemoryBytes = 8 << 10
			}
			f(t, o)
		})
	}
}

func openT(t *testing.T, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func payload(seq uint64) []byte {
	return fmt.Appendf(nil, "record-%08d-%s", seq, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
}

// appendN appends n records in batches of batch, expecting seqs from first.
func appendN(t *testing.T, l *Log, first uint64, n, batch int) uint64 {
	t.Helper()
	ctx := context.Background()
	seq := first
	for n > 0 {
		b := min(batch, n)
		ps := make([][]byte, b)
		for i := range ps {
			ps[i] = payload(seq + uint64(i))
		}
		last, err := l.Append(ctx, ps)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if want := seq + uint64(b) - 1; last != want {
			t.Fatalf("Append last: got %d, want %d", last, want)
		}
		seq += uint64(b)
		n -= b
	}
	return seq - 1
}

// readN reads n records and checks they are from..from+n-1 with the
// payloads appendN wrote.
func readN(t *testing.T, r *Reader, from uint64, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	buf := make([]Record, 0, 37)
	want := from
	for int(want-from) < n {
		recs, err := r.Read(ctx, buf[:0:min(37, n-int(want-from))], 0)
		if err != nil {
			t.Fatalf("Read at %d: %v", want, err)
		}
		for _, rec := range recs {
			if rec.Seq != want {
				t.Fatalf("Read seq: got %d, want %d", rec.Seq, want)
			}
			if string(rec.Payload) != string(payload(want)) {
				t.Fatalf("Read payload %d: got %q", want, rec.Payload)
			}
			want++
		}
	}
	if got := int(want - from); got != n {
		t.Fatalf("read %d records, want %d", got, n)
	}
}

func TestSuiteAppendRead(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.SegmentBytes = 4 << 10
		o.MaxBytes = 1 << 20
		l := openT(t, t.TempDir(), o)
		r, err := l.Reader("sink")
		if err != nil {
			t.Fatal(err)
		}
		last := appendN(t, l, 1, 1000, 7)
		if err := l.Sync(context.Background(), last); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		readN(t, r, 1, 1000)
		st := l.Stats()
		if st.NextSeq != 1001 || st.FirstSeq != 1 || st.Records != 1000 {
			t.Fatalf("stats: got first %d next %d records %d", st.FirstSeq, st.NextSeq, st.Records)
		}
	})
}

// TestSuiteReadBlocksUntilAppend runs in a synctest bubble: synctest.Wait
// returns once every goroutine of the log and of the test waits, so Read is
// seen blocked rather than assumed to be after a pause, and the read
// deadline passes on the bubble's clock.
func TestSuiteReadBlocksUntilAppend(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		synctest.Test(t, func(t *testing.T) {
			l := openT(t, t.TempDir(), o)
			r, _ := l.Reader("sink")
			read := func() <-chan error {
				done := make(chan error, 1)
				go func() {
					recs, err := r.Read(context.Background(), nil, 0)
					if err == nil && (len(recs) != 1 || recs[0].Seq != 1) {
						err = fmt.Errorf("got %v", recs)
					}
					done <- err
				}()
				synctest.Wait()
				select {
				case err := <-done:
					t.Fatalf("Read returned without waiting: %v", err)
				default:
				}
				return done
			}
			done := read()
			appendN(t, l, 1, 1, 1)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			if _, err := r.Read(ctx, nil, 0); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Read on empty: got %v, want deadline exceeded", err)
			}
			done = read()
			l.Close()
			if err := <-done; !errors.Is(err, ErrClosed) {
				t.Fatalf("Read across Close: got %v, want ErrClosed", err)
			}
		})
	})
}

func TestSuiteAckRestart(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		o.SegmentBytes = 4 << 10
		o.MaxBytes = 1 << 20
		l, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := l.Reader("a")
		l.Reader("b") // holds every record until it reads them
		appendN(t, l, 1, 500, 10)
		readN(t, r, 1, 300)
		if err := r.Ack(250); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := l.Append(context.Background(), [][]byte{{1}}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Append after Close: got %v", err)
		}
		l = openT(t, dir, o)
		r, _ = l.Reader("a")
		readN(t, r, 251, 250)
		appendN(t, l, 501, 10, 3)
		readN(t, r, 501, 10)
		r2, _ := l.Reader("b")
		readN(t, r2, 1, 510)
	})
}

func TestSuiteSegmentsDeletedAfterAck(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.SegmentBytes = 2 << 10
		o.MaxBytes = 1 << 20
		o.MemoryBytes = 1 << 10
		l := openT(t, t.TempDir(), o)
		r, _ := l.Reader("a")
		last := appendN(t, l, 1, 400, 10)
		if n := l.Stats().Segments; n < 5 {
			t.Fatalf("segments: got %d, want >= 5", n)
		}
		readN(t, r, 1, 400)
		r.Ack(last)
		wait.For(t, 5*time.Second, "the acked segments and memory freed", func() bool { return l.Stats().Segments <= 1 && l.Stats().MemoryBytes == 0 })
	})
}

func TestSuiteOverflowBlock(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.SegmentBytes = 2 << 10
		o.MaxBytes = 8 << 10
		o.MemoryBytes = 2 << 10
		o.Overflow = Block
		l := openT(t, t.TempDir(), o)
		r, _ := l.Reader("a")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		var n uint64
		var err error
		for err == nil {
			_, err = l.Append(ctx, [][]byte{payload(n + 1)})
			if err == nil {
				n++
			}
		}
		var ae *AppendError
		if !errors.As(err, &ae) || !errors.Is(err, context.DeadlineExceeded) || ae.Accepted != 0 {
			t.Fatalf("full Append: got %v, want AppendError wrapping deadline", err)
		}
		if n < 50 {
			t.Fatalf("stored %d before full, want >= 50", n)
		}
		done := make(chan error, 1)
		go func() {
			_, err := l.Append(context.Background(), [][]byte{payload(n + 1)})
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("Append did not block: %v", err)
		case <-time.After(30 * time.Millisecond):
		}
		readN(t, r, 1, int(n))
		r.Ack(n)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Append still blocked after ack")
		}
		readN(t, r, n+1, 1)
		if d := l.Stats().Drops.Total(); d != 0 {
			t.Fatalf("drops: got %d, want 0", d)
		}
	})
}

func TestSuiteOverflowDropNewest(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.SegmentBytes = 2 << 10
		o.MaxBytes = 8 << 10
		o.MemoryBytes = 2 << 10
		o.Overflow = DropNewest
		l := openT(t, t.TempDir(), o)
		var stored, dropped uint64
		for i := uint64(1); i <= 300; i++ {
			_, err := l.Append(context.Background(), [][]byte{payload(stored + 1)})
			switch {
			case err == nil:
				stored++
			case errors.Is(err, ErrFull):
				var ae *AppendError
				errors.As(err, &ae)
				if ae.Reason != DropOverflowNewest || ae.Dropped != 1 {
					t.Fatalf("got %+v", ae)
				}
				dropped++
			default:
				t.Fatal(err)
			}
		}
		if dropped == 0 || stored == 0 {
			t.Fatalf("stored %d dropped %d", stored, dropped)
		}
		if got := l.Stats().Drops.OverflowNewest; got != dropped {
			t.Fatalf("drops: got %d, want %d", got, dropped)
		}
		if st := l.Stats(); st.DiskBytes+st.MemoryBytes > o.MaxBytes {
			t.Fatalf("bytes %d above cap %d", st.DiskBytes+st.MemoryBytes, o.MaxBytes)
		}
		r, _ := l.Reader("a")
		readN(t, r, 1, int(stored))
	})
}

func TestSuiteOverflowDropOldest(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.SegmentBytes = 2 << 10
		o.MaxBytes = 8 << 10
		o.MemoryBytes = 2 << 10
		o.Overflow = DropOldest
		l := openT(t, t.TempDir(), o)
		r, _ := l.Reader("a")
		readN(t, r, 1, 0)
		last := appendN(t, l, 1, 600, 3)
		st := l.Stats()
		if st.Drops.OverflowOldest == 0 {
			t.Fatal("no drops counted")
		}
		if st.DiskBytes+st.MemoryBytes > o.MaxBytes {
			t.Fatalf("bytes %d above cap %d", st.DiskBytes+st.MemoryBytes, o.MaxBytes)
		}
		if st.FirstSeq != st.Drops.OverflowOldest+1 {
			t.Fatalf("first %d after %d drops", st.FirstSeq, st.Drops.OverflowOldest)
		}
		if c := st.Cursors[0]; c.Next != st.FirstSeq {
			t.Fatalf("cursor next: got %d, want %d", c.Next, st.FirstSeq)
		}
		readN(t, r, st.FirstSeq, int(last-st.FirstSeq+1))
	})
}

func TestSuiteTruncateAfterAndSeek(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		o.SegmentBytes = 2 << 10
		o.MaxBytes = 1 << 20
		o.MemoryBytes = 2 << 10
		l := openT(t, dir, o)
		r, _ := l.Reader("a")
		appendN(t, l, 1, 200, 9)
		readN(t, r, 1, 200)
		r.Ack(5)
		for _, cut := range []uint64{150, 120, 40} {
			if err := l.TruncateAfter(cut); err != nil {
				t.Fatalf("TruncateAfter(%d): %v", cut, err)
			}
			if st := l.Stats(); st.NextSeq != cut+1 || st.Cursors[0].Next != cut+1 {
				t.Fatalf("after cut %d: next %d acked %d", cut, st.NextSeq, st.Cursors[0].Acked)
			}
		}
		appendN(t, l, 41, 60, 7)
		if err := r.Seek(10); err != nil {
			t.Fatal(err)
		}
		readN(t, r, 10, 91)
		if err := r.Seek(1000); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Seek past end: got %v", err)
		}
		l.Close()
		l = openT(t, dir, o)
		r, _ = l.Reader("a")
		if err := r.Seek(1); err != nil {
			t.Fatal(err)
		}
		readN(t, r, 1, 100)
	})
}

func TestSuiteMaxAge(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		now := time.Unix(1_700_000_000, 0)
		var mu = make(chan struct{}, 1)
		mu <- struct{}{}
		clock := func() time.Time { <-mu; defer func() { mu <- struct{}{} }(); return now }
		advance := func(d time.Duration) { <-mu; now = now.Add(d); mu <- struct{}{} }
		o.Now = clock
		o.MaxAge = time.Minute
		o.SegmentBytes = 2 << 10
		o.MemoryBytes = 1 << 10
		o.MaxBytes = 1 << 20
		l := openT(t, t.TempDir(), o)
		appendN(t, l, 1, 100, 10)
		advance(2 * time.Minute)
		appendN(t, l, 101, 100, 10)
		advance(2 * time.Minute)
		wait.For(t, 5*time.Second, "records dropped for age", func() bool { return l.Stats().Drops.Age > 0 })
		if st := l.Stats(); st.FirstSeq <= 1 || st.Drops.Age != st.FirstSeq-1 {
			t.Fatalf("first %d after %d age drops", st.FirstSeq, st.Drops.Age)
		}
	})
}

func TestSuiteSyncModes(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncInterval, SyncNone} {
		t.Run(string(mode), func(t *testing.T) {
			kinds(t, func(t *testing.T, o Options) {
				o.Sync = mode
				l := openT(t, t.TempDir(), o)
				ctx := context.Background()
				errs := make(chan error, 8)
				for g := 0; g < 8; g++ {
					go func() {
						var err error
						for i := 0; i < 20 && err == nil; i++ {
							var last uint64
							last, err = l.Append(ctx, [][]byte{payload(1)})
							if err == nil {
								err = l.Sync(ctx, last)
							}
						}
						errs <- err
					}()
				}
				for g := 0; g < 8; g++ {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
				if mode != SyncNone && o.Kind == Disk {
					if st := l.Stats(); st.DurableSeq != 160 {
						t.Fatalf("durable: got %d, want 160", st.DurableSeq)
					}
				}
			})
		})
	}
}

func TestRecordTooLarge(t *testing.T) {
	l := openT(t, t.TempDir(), Options{MaxRecordBytes: 100})
	_, err := l.Append(context.Background(), [][]byte{make([]byte, 10), make([]byte, 101)})
	var te *RecordTooLargeError
	if !errors.As(err, &te) || te.Index != 1 || !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("got %v", err)
	}
	if n := l.Stats().NextSeq; n != 1 {
		t.Fatalf("stored part of a refused batch: next %d", n)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{Kind: "tape"}, {SegmentBytes: 10}, {MaxBytes: 1 << 20, SegmentBytes: 1 << 20},
		{Overflow: "spill"}, {Sync: "sometimes"}, {SyncInterval: time.Microsecond},
		{MaxRecordBytes: 1 << 30}, {MaxAge: -1},
	} {
		if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v): got %v, want ErrInvalidOptions", o, err)
		}
	}
}

func TestSecondOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
}

// TestConcurrentCloseWaits: a Close that finds the log already closing
// returns only once the first Close has finished, so the directory is
// unlocked and its files are complete when it returns.
func TestConcurrentCloseWaits(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{Sync: SyncBatch})
	entered, release := make(chan struct{}), make(chan struct{})
	l.fsyncHook = func(f *os.File) error {
		close(entered) // only Close's round fsyncs the active segment
		<-release
		return f.Sync()
	}
	appendN(t, l, 1, 1, 1)
	first := make(chan error, 1)
	go func() { first <- l.Close() }()
	<-entered
	second := make(chan error, 1)
	go func() { second <- l.Close() }()
	select {
	case err := <-second:
		t.Fatalf("second Close returned %v while the first was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("second Close: %v", err)
	}
	l2 := openT(t, dir, Options{})
	if st := l2.Stats(); st.NextSeq != 2 {
		t.Fatalf("after reopen: next sequence %d, want 2", st.NextSeq)
	}
}

// TestHotPathNoAllocs holds Append and Read to no per-call allocation once
// their buffers are warm.
func TestHotPathNoAllocs(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.Sync = SyncNone
		o.MaxBytes = 1 << 30
		l := openT(t, t.TempDir(), o)
		r, _ := l.Reader("a")
		ps := make([][]byte, 50)
		for i := range ps {
			ps[i] = make([]byte, 200)
		}
		ctx := context.Background()
		buf := make([]Record, 0, 50)
		step := func() {
			if _, err := l.Append(ctx, ps); err != nil {
				t.Fatal(err)
			}
			for got := 0; got < len(ps); {
				recs, err := r.Read(ctx, buf, 0)
				if err != nil {
					t.Fatal(err)
				}
				got += len(recs)
			}
		}
		for i := 0; i < 50; i++ {
			step() // warm the buffers
		}
		if n := testing.AllocsPerRun(100, step); n > 0.5 {
			t.Fatalf("Append+Read of %d records: %.1f allocs, want 0", len(ps), n)
		}
	})
}
