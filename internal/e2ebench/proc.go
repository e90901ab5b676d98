package e2ebench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture the agent runs on.
const clockTicks = 100

// ProcSample is a process's CPU time and memory at one moment.
type ProcSample struct {
	// CPU is user plus system time, in microseconds: the threads' own
	// count in ns where it is larger than the stat's ticks (threadsCPU).
	CPU int64
	// RSS and HWM are VmRSS and VmHWM (peak RSS), in bytes.
	RSS, HWM int64
	// Anon is RssAnon: the resident memory not backed by a file (heap,
	// stacks). RSS also counts the pages of the executable in use.
	Anon int64
}

// ReadProc samples process pid from /proc (Linux).
func ReadProc(pid int) (ProcSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("e2ebench: proc: %w", err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("e2ebench: proc %d: %w", pid, err)
	}
	cpu = max(cpu, threadsCPU(pid))
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("e2ebench: proc: %w", err)
	}
	rss, hwm, anon := parseStatusMem(status)
	return ProcSample{CPU: cpu, RSS: rss, HWM: hwm, Anon: anon}, nil
}

// threadsCPU returns the CPU time of pid's live threads in µs, summed
// from their schedstat (ns; 0 where unreadable). /proc/PID/stat counts in
// clock ticks (10 ms): at 100 msg/s a 30 s run uses about 100 ms, so its
// ticks alone moved the figure by up to 3 µs per record. The stat's time
// also counts threads that ended, which the sum misses: ReadProc takes the
// larger of the two.
func threadsCPU(pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		ns += parseSchedstat(b)
	}
	return ns / 1000
}

// parseSchedstat returns the first field of a schedstat line, the time
// spent on a CPU in ns (0 if it is not a number).
func parseSchedstat(b []byte) int64 {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// ResetPeak resets the peak resident set size (VmHWM) of pid to its current
// RSS, so that a run's peak excludes the ones before it.
func ResetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("e2ebench: reset peak rss: %w", err)
	}
	return nil
}

// parseStatCPU returns utime+stime in microseconds from the text of
// /proc/PID/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted after the last ')'.
func parseStatCPU(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := bytes.Fields(stat[i+1:])
	// After the name: state(3) ppid(4) ... utime(14) stime(15).
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q: not numbers", f[11], f[12])
	}
	return (ut + st) * (1_000_000 / clockTicks), nil
}

// parseStatusMem returns VmRSS, VmHWM and RssAnon in bytes from the text
// of /proc/PID/status (0 where a line is missing).
func parseStatusMem(status []byte) (rss, hwm, anon int64) {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		case "RssAnon":
			dst = &anon
		default:
			continue
		}
		f := bytes.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && string(f[1]) == "kB" {
			n *= 1024
		}
		*dst = n
	}
	return rss, hwm, anon
}
