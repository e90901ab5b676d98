package main

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4+): reclaim these pages now.
const madvPageout = 21

// releaseStartupPages waits for delay, then advises the kernel that the pages
// of the agent's own executable mapped so far are cold. Go touches much of a
// binary while it starts (package initialisation, the first pipelines'
// construction), and those clean, file-backed pages otherwise stay resident
// for the life of the process: about half of the demo's resident memory. The
// code the agent keeps running faults back in on its next use, one page at a
// time (MADV_RANDOM). With every > 0 it does so again every that long: code
// run once in a while (a Kafka outage's retries, a reload, a burst's error
// paths) otherwise accumulates; each release costs the faults that bring the
// working set back, a few thousand pages. Kernels without MADV_PAGEOUT refuse
// the advice, which is harmless. It returns when ctx ends.
func releaseStartupPages(ctx context.Context, delay, every time.Duration, logger *slog.Logger) {
	if os.Getenv("PSPF_KEEP_STARTUP_PAGES") != "" {
		return
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		releaseExecutablePages(logger)
		if every <= 0 {
			return
		}
		t.Reset(every)
	}
}

// releaseExecutablePages advises MADV_RANDOM and MADV_PAGEOUT on the
// read-only mappings of the running executable.
func releaseExecutablePages(logger *slog.Logger) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	var released uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-00b1f000 r-xp 00000000 fd:00 123 /usr/bin/pspf-edge
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		from, to, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(from, 16, 64)
		b, err2 := strconv.ParseUint(to, 16, 64)
		if err1 != nil || err2 != nil || b <= a {
			continue
		}
		// MADV_RANDOM first: a page that faults back in is read alone
		// instead of with the 128 KiB of read-around (and the 64 KiB of
		// fault-around it then maps), most of which the running agent
		// never executes. Under load that is the difference between about
		// 13 MB and 6 MB of the binary resident, for no measurable CPU.
		syscall.Syscall(syscall.SYS_MADVISE, uintptr(a), uintptr(b-a), syscall.MADV_RANDOM)
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(a), uintptr(b-a), madvPageout); errno == 0 {
			released += uintptr(b - a)
		}
	}
	if released > 0 {
		logger.Debug("start-up pages of the executable released", "bytes", released)
	}
}

// executableResident returns the bytes of the running executable's
// read-only mappings that are resident (their Rss in /proc/self/smaps), or
// -1 if that cannot be read.
func executableResident() int64 {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return -1
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return -1
	}
	defer f.Close()
	var kb int64
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		// A mapping's first line: 00400000-00b1f000 r-xp 00000000 fd:00 123 /usr/bin/pspf-edge
		if !strings.HasSuffix(fields[0], ":") && strings.Contains(fields[0], "-") {
			in = len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w")
			found = found || in
			continue
		}
		if in && fields[0] == "Rss:" && len(fields) >= 2 {
			if n, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
				kb += n
			}
		}
	}
	if sc.Err() != nil || !found {
		return -1
	}
	return kb << 10
}
