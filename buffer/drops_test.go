package buffer

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// Drop counters are exact: with a reader consuming while the log drops,
// every payload appended is either delivered (read) once or counted as
// dropped, never both.
func TestDropCountsExact(t *testing.T) {
	for _, policy := range []Policy{DropOldest, DropNewest} {
		t.Run(string(policy), func(t *testing.T) {
			kinds(t, func(t *testing.T, o Options) {
				o.SegmentBytes = 2 << 10
				o.MaxBytes = 8 << 10
				o.MemoryBytes = 2 << 10
				o.Overflow = policy
				l := openT(t, t.TempDir(), o)
				r, _ := l.Reader("sink")
				const total = 6000
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()

				delivered := map[string]int{}
				readDone := make(chan error, 1)
				appended := make(chan uint64, 1) // NextSeq once appending ended
				go func() {
					rng := rand.New(rand.NewPCG(1, 2))
					buf := make([]Record, 0, 8)
					end := uint64(0)
					for {
						if end == 0 {
							select {
							case end = <-appended:
							default:
							}
						}
						if end != 0 {
							if st := l.Stats(); st.Cursors[0].Next >= end {
								readDone <- nil
								return
							}
						}
						rctx, rcancel := context.WithTimeout(ctx, 20*time.Millisecond)
						recs, err := r.Read(rctx, buf[:0:1+rng.IntN(8)], 0)
						rcancel()
						if errors.Is(err, context.DeadlineExceeded) {
							continue
						}
						if err != nil {
							readDone <- err
							return
						}
						for _, rec := range recs {
							delivered[string(rec.Payload)]++
						}
						if rng.IntN(3) == 0 {
							r.Ack(recs[len(recs)-1].Seq)
						}
					}
				}()

				refused := map[string]bool{}
				input := map[string]bool{}
				rng := rand.New(rand.NewPCG(3, 4))
				for i := uint64(1); i <= total; {
					var batch [][]byte
					for k := 1 + rng.IntN(7); k > 0 && i <= total; k-- {
						batch = append(batch, payload(i))
						input[string(payload(i))] = true
						i++
					}
					_, err := l.Append(ctx, batch)
					var ae *AppendError
					switch {
					case err == nil:
					case errors.As(err, &ae) && ae.Reason != "":
						for _, p := range batch[ae.Accepted:] {
							refused[string(p)] = true
						}
					default:
						t.Fatal(err)
					}
				}
				appended <- l.Stats().NextSeq
				if err := <-readDone; err != nil {
					t.Fatal(err)
				}

				st := l.Stats()
				undelivered := 0
				for p := range input {
					n := delivered[p]
					switch {
					case n > 1:
						t.Fatalf("%q delivered %d times", p, n)
					case n == 1 && refused[p]:
						t.Fatalf("%q delivered and refused", p)
					case n == 0:
						undelivered++
					}
				}
				for p := range delivered {
					if !input[p] {
						t.Fatalf("delivered %q, which was never appended", p)
					}
				}
				if undelivered == 0 {
					t.Fatal("nothing was dropped: the test did not overflow the log")
				}
				switch policy {
				case DropOldest:
					if got := st.Drops.OverflowOldest; got != uint64(undelivered) {
						t.Fatalf("overflow_oldest: got %d, want %d (appended %d, delivered %d)", got, undelivered, total, total-undelivered)
					}
					if got := st.Cursors[0].Dropped; got != uint64(undelivered) {
						t.Fatalf("cursor dropped: got %d, want %d", got, undelivered)
					}
				case DropNewest:
					if got := st.Drops.OverflowNewest; got != uint64(undelivered) || len(refused) != undelivered {
						t.Fatalf("overflow_newest: got %d, refused %d, want %d", got, len(refused), undelivered)
					}
				}
				if st.Drops.Total() != uint64(undelivered) {
					t.Fatalf("drops: got %+v, want %d in all", st.Drops, undelivered)
				}
			})
		})
	}
}

// Records a reader has already read are not counted when the segment
// holding them is dropped: only the unread rest is.
func TestDropOldestCountsOnlyUnread(t *testing.T) {
	kinds(t, func(t *testing.T, o Options) {
		o.SegmentBytes = 2 << 10
		o.MaxBytes = 8 << 10
		o.MemoryBytes = 2 << 10
		o.Overflow = DropOldest
		l := openT(t, t.TempDir(), o)
		a, _ := l.Reader("a")
		b, _ := l.Reader("b")
		appendN(t, l, 1, 40, 1)
		readN(t, a, 1, 10) // a has read 1..10, b nothing
		readN(t, b, 1, 4)  // b has read 1..4
		first := l.Stats().Segments
		last := uint64(40)
		for l.Stats().Drops.OverflowOldest == 0 && l.Stats().Cursors[0].Dropped == 0 {
			last = appendN(t, l, last+1, 1, 1)
			if last > 1000 {
				t.Fatalf("no segment dropped after %d records (%d segments at first)", last, first)
			}
		}
		st := l.Stats()
		dropped := st.FirstSeq - 1 // the first segment held 1..FirstSeq-1
		if dropped <= 10 {
			t.Fatalf("first segment held %d records, want more than 10", dropped)
		}
		if got, want := st.Drops.OverflowOldest, dropped-10; got != want {
			t.Fatalf("overflow_oldest: got %d, want %d (records 11..%d, which no reader read)", got, want, dropped)
		}
		if got := st.Cursors[0].Dropped; got != dropped-10 {
			t.Fatalf("reader a lost: got %d, want %d", got, dropped-10)
		}
		if got := st.Cursors[1].Dropped; got != dropped-4 {
			t.Fatalf("reader b lost: got %d, want %d", got, dropped-4)
		}
		readN(t, a, st.FirstSeq, int(last-st.FirstSeq+1))
	})
}
