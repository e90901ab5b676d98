package buffer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
)

// TestStressConcurrent runs appenders, readers that ack, Stats callers and
// a final Close concurrently under each policy: readers see sequences in
// increasing order and each writer's records in its order, and everything
// ends cleanly on Close. The Close comes once each reader has read
// stressRecords records: a count, not a time window, so that a slow machine
// runs longer instead of testing less.
func TestStressConcurrent(t *testing.T) {
	const stressRecords = 2000
	for _, policy := range []Policy{Block, DropOldest, DropNewest} {
		t.Run(string(policy), func(t *testing.T) {
			kinds(t, func(t *testing.T, o Options) {
				o.SegmentBytes = 2 << 10
				o.MaxBytes = 16 << 10
				o.MemoryBytes = 4 << 10
				o.Overflow = policy
				o.Sync = SyncBatch
				l, err := Open(t.TempDir(), o)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				errs := make(chan error, 16)
				for w := 0; w < 2; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := 0; ; n++ {
							last, err := l.Append(ctx, [][]byte{fmt.Appendf(nil, "w%d-%09d", w, n)})
							if err == nil {
								err = l.Sync(ctx, last)
							}
							if errors.Is(err, ErrFull) {
								continue
							}
							if err != nil {
								if !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
									errs <- fmt.Errorf("writer %d: %w", w, err)
								}
								return
							}
						}
					}()
				}
				var read [2]atomic.Int64 // records each reader has read
				for i, name := range []string{"r1", "r2"} {
					r, _ := l.Reader(name)
					wg.Add(1)
					go func() {
						defer wg.Done()
						var lastSeq uint64
						lastN := [2]int{-1, -1}
						buf := make([]Record, 0, 16)
						for {
							recs, err := r.Read(ctx, buf, 0)
							if err != nil {
								if !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
									errs <- fmt.Errorf("reader %s: %w", name, err)
								}
								return
							}
							for _, rec := range recs {
								var w, n int
								if _, err := fmt.Sscanf(string(rec.Payload), "w%d-%d", &w, &n); err != nil {
									errs <- fmt.Errorf("reader %s: bad payload %q", name, rec.Payload)
									return
								}
								if rec.Seq <= lastSeq || n <= lastN[w] {
									errs <- fmt.Errorf("reader %s: seq %d after %d, writer %d record %d after %d", name, rec.Seq, lastSeq, w, n, lastN[w])
									return
								}
								lastSeq, lastN[w] = rec.Seq, n
							}
							read[i].Add(int64(len(recs)))
							r.Ack(lastSeq)
						}
					}()
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						l.Stats()
						time.Sleep(time.Millisecond) // the pace of this load: Stats callers, not a busy loop
					}
				}()
				if !wait.Until(30*time.Second, func() bool { return min(read[0].Load(), read[1].Load()) >= stressRecords }) {
					t.Errorf("readers read %d and %d records in 30s, want %d each", read[0].Load(), read[1].Load(), stressRecords)
				}
				if err := l.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				cancel()
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		})
	}
}
