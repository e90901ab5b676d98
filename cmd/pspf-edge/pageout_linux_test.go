package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestReleaseStartupPagesAdvisesRandom checks that the read-only mappings of
// the executable (here the test binary) carry the random-access advice
// after the release, so that pages fault back in one at a time.
func TestReleaseStartupPagesAdvisesRandom(t *testing.T) {
	t.Setenv("PSPF_KEEP_STARTUP_PAGES", "")
	releaseStartupPages(context.Background(), 0, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mapping string
	checked := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			mapping = ""
			if len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w") {
				mapping = line
			}
			continue
		}
		if mapping != "" && fields[0] == "VmFlags:" {
			checked++
			if !strings.Contains(" "+strings.Join(fields[1:], " ")+" ", " rr ") {
				t.Errorf("mapping %q: VmFlags %v, want rr (random read)", mapping, fields[1:])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatalf("got no read-only mapping of %s in /proc/self/smaps, want at least one", exe)
	}
}

// TestReleaseStartupPagesPeriodicEndsWithContext runs the periodic release
// several times and checks that it returns once its context ends. It runs in
// a synctest bubble: the sleep moves the bubble's clock by six periods, and
// the return is seen without waiting on the wall clock.
func TestReleaseStartupPagesPeriodicEndsWithContext(t *testing.T) {
	t.Setenv("PSPF_KEEP_STARTUP_PAGES", "")
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			releaseStartupPages(ctx, 0, 5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
		time.Sleep(30 * time.Millisecond)
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("releaseStartupPages still runs after its context ended, want a prompt return")
		}
	})
}

// TestExecutableResident: the resident part of the test binary's read-only
// mappings is found and sane (some code runs, so some is resident; no more
// than the binary).
func TestExecutableResident(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	got := executableResident()
	if got <= 0 || got > fi.Size()+1<<20 {
		t.Fatalf("executableResident() = %d, want between 1 and the binary's %d bytes", got, fi.Size())
	}
}
