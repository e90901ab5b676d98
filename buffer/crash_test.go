package buffer

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Child processes: the test binary re-executes itself with one of these
// variables set, and TestMain runs the child instead of the tests.
const (
	envCrashChild = "BUFFER_TEST_CRASH_CHILD" // dir,mode,seed
	envRSSChild   = "BUFFER_TEST_RSS_CHILD"   // dir
)

func TestMain(m *testing.M) {
	if v := os.Getenv(envCrashChild); v != "" {
		crashChild(v)
		os.Exit(0)
	}
	if v := os.Getenv(envIDsChild); v != "" {
		idsChild(v)
		os.Exit(0)
	}
	if v := os.Getenv(envRSSChild); v != "" {
		rssChild(v)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild appends batches forever and prints the last sequence of each
// batch once Sync returned for it, until it is killed.
func crashChild(arg string) {
	var dir, mode string
	var seed uint64
	if _, err := fmt.Sscanf(arg, "%s %s %d", &dir, &mode, &seed); err != nil {
		fmt.Fprintln(os.Stderr, "bad child arg:", err)
		os.Exit(2)
	}
	l, err := Open(dir, Options{Sync: SyncMode(mode), SegmentBytes: 8 << 10, MaxBytes: 64 << 20, SyncInterval: 2 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	out := bufio.NewWriterSize(os.Stdout, 64)
	for n := 0; ; {
		ps := make([][]byte, 1+rng.IntN(40))
		for i := range ps {
			ps[i] = fmt.Appendf(nil, "s%d-%d", seed, n)
			n++
		}
		last, err := l.Append(ctx, ps)
		if err == nil {
			err = l.Sync(ctx, last)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(2)
		}
		out.WriteString(strconv.FormatUint(last, 10) + "\n")
		out.Flush()
	}
}

// TestCrashKill9 kills an appending child with SIGKILL at random moments:
// every sequence it reported durable must be readable, in order, intact,
// and no sequence may carry two payloads.
func TestCrashKill9(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 20; seed++ {
		mode := SyncInterval
		if seed%2 == 0 {
			mode = SyncBatch
		}
		t.Run(fmt.Sprintf("seed%d-%s", seed, mode), func(t *testing.T) {
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(seed, 1))
			var printed uint64
			var durable []uint64
			book := newIDBook()
			for round := 0; round < 2; round++ {
				cmd := exec.Command(exe, "-test.run=^$")
				cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", envCrashChild, dir, mode, seed*10+uint64(round)))
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// Kill at a random moment after the child got going (its
				// start-up time varies a lot under -race).
				delay := time.Duration(5+rng.IntN(150)) * time.Millisecond
				watchdog := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
				var timer *time.Timer
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if timer == nil {
						timer = time.AfterFunc(delay, func() { cmd.Process.Kill() })
					}
					n, err := strconv.ParseUint(sc.Text(), 10, 64)
					if err != nil {
						// A torn last line at the kill: ignore it.
						continue
					}
					if n < printed {
						t.Fatalf("child reported %d after %d", n, printed)
					}
					printed = n
					durable = append(durable, n)
				}
				watchdog.Stop()
				cmd.Wait()

				l, err := Open(dir, Options{SegmentBytes: 8 << 10, MaxBytes: 64 << 20})
				if err != nil {
					t.Fatalf("round %d: Open after kill: %v", round, err)
				}
				readBook(t, l, fmt.Sprintf("check%d", round), book, fmt.Sprintf("round %d", round))
				for _, s := range durable {
					if _, ok := book.bySeq[s]; !ok {
						t.Fatalf("round %d: record %d was reported durable and is not readable", round, s)
					}
				}
				if lost := l.Stats().Lost; lost != 0 {
					t.Fatalf("round %d: %d records lost after kill -9", round, lost)
				}
				l.Close()
				if vr, err := Verify(dir); err != nil || !vr.OK() {
					t.Fatalf("round %d: Verify after recovery: %+v %v", round, vr.Problems, err)
				}
			}
			if printed == 0 {
				t.Fatal("child never reported a durable record")
			}
		})
	}
}
