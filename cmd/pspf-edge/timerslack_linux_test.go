package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTimerSlack is a timerSlackOS that records what adoptTimerSlack asks.
type fakeTimerSlack struct {
	have    time.Duration
	getErr  error
	setErr  error
	execErr error
	sets    []time.Duration
	execs   [][]string
}

func (f *fakeTimerSlack) os() timerSlackOS {
	return timerSlackOS{
		get: func() (time.Duration, error) { return f.have, f.getErr },
		set: func(d time.Duration) error {
			if f.setErr != nil {
				return f.setErr
			}
			f.sets = append(f.sets, d)
			f.have = d
			return nil
		},
		exec: func(env []string) error {
			f.execs = append(f.execs, env)
			return f.execErr
		},
	}
}

// noExecTimerSlack is a timerSlackOS for tests that run the agent in the
// test process: the slack is the kernel's default, and the one execution
// the agent should ask for (the default timer_slack differs) fails, as it
// would on a system without /proc.
func noExecTimerSlack(t *testing.T) timerSlackOS {
	f := &fakeTimerSlack{have: 50 * time.Microsecond, execErr: errors.New("not in a test")}
	t.Cleanup(func() {
		if len(f.execs) != 1 || len(f.sets) != 2 || f.sets[0] != time.Millisecond {
			t.Errorf("got executions %q and slacks set %v, want one execution for the default 1ms", f.execs, f.sets)
		}
	})
	return f.os()
}

// TestAdoptTimerSlackDecides: the agent executes itself again only when
// its slack differs from the one asked, once, with the marker in the
// environment; it goes on with a WARN's error when it cannot.
func TestAdoptTimerSlackDecides(t *testing.T) {
	env := []string{"A=1", "PATH=/bin"}
	t.Run("asked", func(t *testing.T) {
		f := &fakeTimerSlack{have: 50 * time.Microsecond, execErr: errors.New("exec format error")}
		err := adoptTimerSlack(time.Millisecond, env, f.os())
		if len(f.execs) != 1 || strings.Join(f.execs[0], " ") != "A=1 PATH=/bin "+timerSlackExecEnv+"=1000000" {
			t.Fatalf("got executions %q, want one with the environment and %s=1000000", f.execs, timerSlackExecEnv)
		}
		// The failed execution leaves the thread as it was.
		if len(f.sets) != 2 || f.sets[0] != time.Millisecond || f.sets[1] != 50*time.Microsecond {
			t.Errorf("got slacks set %v, want [1ms 50µs]", f.sets)
		}
		if err == nil || !strings.Contains(err.Error(), "timer slack: execute again: exec format error") {
			t.Errorf("got %v, want the execution's error", err)
		}
	})
	for _, tc := range []struct {
		name string
		want time.Duration
		f    fakeTimerSlack
		env  []string
		err  string
	}{
		{name: "zero leaves it", want: 0, f: fakeTimerSlack{have: 50 * time.Microsecond}},
		{name: "already so", want: time.Millisecond, f: fakeTimerSlack{have: time.Millisecond}},
		{name: "executed already", want: time.Millisecond, f: fakeTimerSlack{have: 50 * time.Microsecond},
			env: []string{timerSlackExecEnv + "=1000000"}, err: "timer slack: 50µs after executing again for 1ms"},
		{name: "read fails", want: time.Millisecond, f: fakeTimerSlack{getErr: errors.New("invalid argument")},
			err: "timer slack: read: invalid argument"},
		{name: "set fails", want: time.Millisecond, f: fakeTimerSlack{have: 50 * time.Microsecond, setErr: errors.New("operation not permitted")},
			err: "timer slack: set 1ms: operation not permitted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			err := adoptTimerSlack(tc.want, append(env, tc.env...), f.os())
			if len(f.execs) != 0 {
				t.Errorf("got executions %q, want none", f.execs)
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Errorf("got error %v, want %q", err, tc.err)
			}
		})
	}
}

// timerSlackChildEnv makes the test binary the child of
// TestTimerSlackReachesEveryThread.
const timerSlackChildEnv = "PSPF_TEST_TIMER_SLACK_CHILD"

// timerSlackReport is what that child prints.
type timerSlackReport struct {
	Pid     int
	Marker  string
	Threads map[int]time.Duration
	Err     string
}

// TestTimerSlackReachesEveryThread runs adoptTimerSlack for real in a child
// test process: it executes itself again (same process id, the marker in its
// environment), and then every thread, the runtime's own started before any
// code of ours and ones started later, has the slack.
func TestTimerSlackReachesEveryThread(t *testing.T) {
	if os.Getenv(timerSlackChildEnv) != "" {
		timerSlackChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTimerSlackReachesEveryThread$", "-test.count=1")
	cmd.Env = append(os.Environ(), timerSlackChildEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s%s", err, out, stderr.String())
	}
	line := ""
	for l := range strings.Lines(string(out)) {
		if r, ok := strings.CutPrefix(l, "REPORT "); ok {
			line = r
		}
	}
	var r timerSlackReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("child's report %q: %v\n%s%s", line, err, out, stderr.String())
	}
	if r.Err != "" {
		t.Fatalf("child: %s", r.Err)
	}
	if r.Pid != cmd.Process.Pid || r.Marker != "3000000" {
		t.Errorf("got pid %d and marker %q, want pid %d (executed in place) and marker 3000000", r.Pid, r.Marker, cmd.Process.Pid)
	}
	if len(r.Threads) < 3 {
		t.Errorf("got %d threads, want at least 3 (main, the runtime's monitor, one started after)", len(r.Threads))
	}
	for tid, d := range r.Threads {
		if d != 3*time.Millisecond {
			t.Errorf("thread %d has slack %v, want 3ms (all: %v)", tid, d, r.Threads)
		}
	}
}

// timerSlackChild is the child's side: adopt 3ms (the first start executes
// again and so never returns from it), start threads, report.
func timerSlackChild() {
	r := timerSlackReport{Pid: os.Getpid()}
	defer func() {
		b, _ := json.Marshal(r)
		os.Stdout.WriteString("REPORT " + string(b) + "\n")
	}()
	if err := adoptTimerSlack(3*time.Millisecond, os.Environ(), realTimerSlackOS()); err != nil {
		r.Err = err.Error()
		return
	}
	r.Marker = os.Getenv(timerSlackExecEnv)
	// Threads of goroutines locked to them, started now.
	var started, done sync.WaitGroup
	release := make(chan struct{})
	for range 3 {
		started.Add(1)
		done.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			started.Done()
			<-release
		})
	}
	started.Wait()
	threads, err := threadTimerSlacks(os.Getpid())
	close(release)
	done.Wait()
	if err != nil {
		r.Err = err.Error()
		return
	}
	r.Threads = threads
}

// threadTimerSlacks reads the timer slack of every thread of process pid,
// keyed by thread id.
func threadTimerSlacks(pid int) (map[int]time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[int]time.Duration, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Only /proc/TID has it, not /proc/PID/task/TID.
		b, err := os.ReadFile("/proc/" + e.Name() + "/timerslack_ns")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended meanwhile
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w (another thread's timer slack is readable with CAP_SYS_NICE only: run the tests as root)", err)
		}
		if err != nil {
			return nil, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, err
		}
		out[tid] = time.Duration(ns)
	}
	return out, nil
}
