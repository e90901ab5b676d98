package buffer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/testkit"
	"github.com/pspf/pspf-edge/internal/wait"
)

// withLogLines sets o.Logger to a text logger writing into the returned
// lines.
func withLogLines(o *Options) *testkit.LogBuffer {
	w := &testkit.LogBuffer{}
	o.Logger = w.Logger(slog.LevelInfo)
	return w
}

// setFullQuiet shortens how long a full episode must be quiet to end.
func setFullQuiet(l *Log, d time.Duration) {
	l.mu.Lock()
	l.fullQuiet = d
	l.mu.Unlock()
}

const (
	warnFull  = `level=WARN msg="buffer: log full`
	infoEnded = `level=INFO msg="buffer: log no longer full"`
)

// A log at its cap says so once per episode, whatever the policy, shows
// the episode in Stats, and says when it is over.
func TestFullEpisodeAtCap(t *testing.T) {
	for _, policy := range []Policy{Block, DropOldest, DropNewest} {
		t.Run(string(policy), func(t *testing.T) {
			kinds(t, func(t *testing.T, o Options) {
				o.SegmentBytes = 2 << 10
				o.MaxBytes = 8 << 10
				o.MemoryBytes = 2 << 10
				o.Overflow = policy
				o.AckInterval = 20 * time.Millisecond // upkeep's idle tick: the end is seen soon
				lines := withLogLines(&o)
				l := openT(t, t.TempDir(), o)
				// Long enough for the drain below to be one episode (the
				// log fills and empties many times), not so long that the
				// test waits.
				setFullQuiet(l, 500*time.Millisecond)
				r, _ := l.Reader("sink")
				ctx := context.Background()

				// 600 records, far more than the cap holds: one episode.
				done := make(chan error, 1)
				go func() {
					var err error
					for i := uint64(1); i <= 600; i++ {
						_, aerr := l.Append(ctx, [][]byte{payload(i)})
						if aerr != nil && !errors.Is(aerr, ErrFull) {
							err = aerr
							break
						}
					}
					done <- err
				}()
				if policy == Block {
					wait.For(t, 5*time.Second, "the log to block", func() bool { return l.Stats().Full.Blocked })
				} else if err := <-done; err != nil {
					t.Fatal(err)
				}
				st := l.Stats()
				if st.Full.Since.IsZero() || st.Full.Reason != FullMaxBytes || st.Full.Err != nil {
					t.Fatalf("full episode: got %+v, want one since a moment ago, reason max_bytes", st.Full)
				}
				if time.Since(st.Full.Since) > time.Minute {
					t.Fatalf("full since %v, want a moment ago", st.Full.Since)
				}
				if got := st.Full.Blocked; got != (policy == Block) {
					t.Fatalf("blocked: got %v, want %v", got, policy == Block)
				}
				if got, want := st.Full.Dropped, st.Drops.Total(); got != want || (policy != Block) != (got > 0) {
					t.Fatalf("dropped in the episode: got %d, log drops %d (policy %s)", got, want, policy)
				}
				if n := lines.Count(warnFull, "reason=max_bytes", "policy="+string(policy)); n != 1 {
					t.Fatalf("WARN lines for the full log: got %d, want 1\n%s", n, lines)
				}
				if n := lines.Count(infoEnded); n != 0 {
					t.Fatalf("episode ended while full:\n%s", lines)
				}

				// The reader drains everything: the episode ends, once.
				finished := policy != Block
				for {
					if !finished {
						select {
						case err := <-done:
							if err != nil {
								t.Fatal(err)
							}
							finished = true
						default:
						}
					}
					if st := l.Stats(); finished && st.Cursors[0].Next >= st.NextSeq {
						break
					}
					rctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
					recs, err := r.Read(rctx, make([]Record, 0, 256), 0)
					cancel()
					if errors.Is(err, context.DeadlineExceeded) {
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					if err := r.Ack(recs[len(recs)-1].Seq); err != nil {
						t.Fatal(err)
					}
				}
				wait.For(t, 5*time.Second, "the full episode to end", func() bool { return l.Stats().Full.Since.IsZero() })
				if n := lines.Count(infoEnded, "reason=max_bytes", "duration="); n != 1 {
					t.Fatalf("INFO lines for the end of the episode: got %d, want 1\n%s", n, lines)
				}
				if n := lines.Count(warnFull); n != 1 {
					t.Fatalf("WARN lines after the episode: got %d, want 1\n%s", n, lines)
				}
			})
		})
	}
}

// TestFreeSpaceReadLessWhenRoomy: the free space is read again a second
// after the last read while it is short (under freeShort), unknown or a
// full episode is on, and only every freeEveryRoomy while there is room.
func TestFreeSpaceReadLessWhenRoomy(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	short := l.freeShort()
	if short != 256<<20 {
		t.Fatalf("freeShort with 16 MiB segments: got %d, want 256 MiB", short)
	}
	now := time.Now()
	for _, tc := range []struct {
		name  string
		free  int64
		full  bool
		since time.Duration
		want  bool
	}{
		{"just read", 1 << 40, false, 500 * time.Millisecond, false},
		{"roomy, a second ago", 1 << 40, false, 2 * time.Second, false},
		{"roomy, 10 s ago", 1 << 40, false, freeEveryRoomy, true},
		{"short, a second ago", short - 1, false, freeEvery, true},
		{"short, just read", short - 1, false, 900 * time.Millisecond, false},
		{"unknown, a second ago", -1, false, freeEvery, true},
		{"roomy but full, a second ago", 1 << 40, true, freeEvery, true},
	} {
		l.mu.Lock()
		l.diskFree, l.freeAt = tc.free, now.Add(-tc.since)
		l.full.since = time.Time{}
		if tc.full {
			l.full.since = now
		}
		got := l.freeDueLocked(now)
		l.full.since = time.Time{}
		l.mu.Unlock()
		if got != tc.want {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.want)
		}
	}
}
