package state

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child that runs
// put+checkpoint cycles until it is killed. These variables carry its job.
const (
	envCrashPath = "STATE_CRASH_CHILD_PATH"
	envCrashSeed = "STATE_CRASH_CHILD_SEED"
	crashTTL     = 5 * time.Second
	crashBudget  = 16 << 10
)

var crashBase = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	if path := os.Getenv(envCrashPath); path != "" {
		seed, _ := strconv.ParseUint(os.Getenv(envCrashSeed), 10, 64)
		if err := crashChild(path, seed); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type crashOp struct {
	table string // "a" (no TTL) or "b" (TTL crashTTL)
	key   string
	val   string // "" deletes
}

// crashOps returns the deterministic operations of one cycle.
func crashOps(seed, cycle uint64) []crashOp {
	r := rand.New(rand.NewPCG(seed, cycle))
	ops := make([]crashOp, 20+r.IntN(300))
	for i := range ops {
		op := crashOp{table: "a", key: fmt.Sprintf("key%04d", r.IntN(2000))}
		if r.IntN(3) == 0 {
			op.table = "b"
		}
		if r.IntN(5) != 0 {
			op.val = fmt.Sprintf("c%d.%d.%s", cycle, i, strings.Repeat("x", r.IntN(100)))
		}
		ops[i] = op
	}
	return ops
}

// crashChild continues the cycles from the last checkpoint of the file and
// prints "seq N" after checkpoint N has committed, forever.
func crashChild(path string, seed uint64) error {
	// The clock of cycle c is crashBase + c seconds; it starts at that of
	// the file's last checkpoint, where the state clock resumes.
	var now atomic.Int64
	now.Store(crashBase.UnixNano())
	db, err := Open(path, Options{CacheBytes: crashBudget, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		return err
	}
	if last, err := db.LastCheckpoint(); err != nil {
		return err
	} else if last.Seq > 0 {
		_ = db.Close()
		now.Store(crashBase.Add(time.Duration(last.Seq) * time.Second).UnixNano())
		if db, err = Open(path, Options{CacheBytes: crashBudget, Now: func() time.Time { return time.Unix(0, now.Load()) }}); err != nil {
			return err
		}
	}
	a, err := db.Table("a", 0)
	if err != nil {
		return err
	}
	b, err := db.Table("b", crashTTL)
	if err != nil {
		return err
	}
	info, err := db.LastCheckpoint()
	if err != nil {
		return err
	}
	for c := info.Seq + 1; ; c++ {
		now.Store(crashBase.Add(time.Duration(c) * time.Second).UnixNano())
		for _, op := range crashOps(seed, c) {
			tb := a
			if op.table == "b" {
				tb = b
			}
			if op.val == "" {
				err = tb.Delete([]byte(op.key))
			} else {
				err = tb.Put([]byte(op.key), []byte(op.val))
			}
			if err != nil {
				return err
			}
			// Reads pull evicted keys back from the file.
			if _, _, err := tb.Get([]byte(op.key+"x"), nil); err != nil {
				return err
			}
		}
		st, err := db.Checkpoint(map[string][]byte{"cycle": []byte(strconv.FormatUint(c, 10))})
		if err != nil {
			return err
		}
		if st.Seq != c {
			return fmt.Errorf("checkpoint seq %d, want %d", st.Seq, c)
		}
		fmt.Printf("seq %d\n", c)
	}
}

// crashModel is the state after the checkpoint of a cycle: table -> key ->
// value and write cycle.
type crashModel map[string]map[string]crashRec

type crashRec struct {
	val   string
	cycle uint64
}

func (m crashModel) apply(seed, c uint64) {
	for _, op := range crashOps(seed, c) {
		if op.val == "" {
			delete(m[op.table], op.key)
		} else {
			m[op.table][op.key] = crashRec{op.val, c}
		}
	}
	for k, r := range m["b"] { // expiry at the checkpoint of cycle c
		if crashBase.Add(time.Duration(r.cycle)*time.Second).Add(crashTTL).Compare(crashBase.Add(time.Duration(c)*time.Second)) <= 0 {
			delete(m["b"], k)
		}
	}
}

// TestCrash kills a child that runs put+checkpoint cycles with SIGKILL at
// random moments, 20 seeds with 3 kills each, and checks after each kill
// that the file passes bbolt's check and holds exactly the state of the
// checkpoint it records, which is the last one the child reported or a
// later one.
func TestCrash(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			r := rand.New(rand.NewPCG(seed, 99))
			model := crashModel{"a": {}, "b": {}}
			var applied uint64
			for round := range 3 {
				printed := runAndKill(t, exe, path, seed, time.Duration(30+r.IntN(300))*time.Millisecond)
				db, err := Open(path, Options{CacheBytes: crashBudget, Now: func() time.Time { return crashBase }})
				if err != nil {
					t.Fatalf("round %d: reopen: %v", round, err)
				}
				if err := db.Check(); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				info, _ := db.LastCheckpoint()
				wantMeta := strconv.FormatUint(info.Seq, 10)
				if info.Seq == 0 {
					wantMeta = "" // killed before its first checkpoint
				}
				if info.Seq < printed || string(info.Meta["cycle"]) != wantMeta {
					t.Fatalf("round %d: file at checkpoint %d (meta cycle %q), child reported %d", round, info.Seq, info.Meta["cycle"], printed)
				}
				for ; applied < info.Seq; applied++ {
					model.apply(seed, applied+1)
				}
				// The state clock resumed at the checkpoint's: crashBase + seq s.
				if want := crashBase.Add(time.Duration(info.Seq) * time.Second); info.Seq > 0 && db.nowNanos() != want.UnixNano() {
					t.Fatalf("round %d: state clock %d, want %d (checkpoint %d)", round, db.nowNanos(), want.UnixNano(), info.Seq)
				}
				for _, name := range []string{"a", "b"} {
					ttl := time.Duration(0)
					if name == "b" {
						ttl = crashTTL
					}
					tb := mustTable(t, db, name, ttl)
					got := dump(t, tb)
					if len(got) != len(model[name]) {
						t.Errorf("round %d, checkpoint %d, table %s: %d keys, want %d", round, info.Seq, name, len(got), len(model[name]))
					}
					for k, r := range model[name] {
						if got[k] != r.val {
							t.Fatalf("round %d, checkpoint %d, table %s: key %s = %q, want %q", round, info.Seq, name, k, got[k], r.val)
						}
					}
					if n, err := tb.Len(); err != nil || n != len(model[name]) {
						t.Errorf("round %d: Len(%s) = %d, %v; want %d", round, name, n, err, len(model[name]))
					}
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				t.Logf("round %d: killed after %d printed, file at %d", round, printed, info.Seq)
			}
		})
	}
}

// runAndKill runs the child for about d, kills it with SIGKILL and returns
// the last checkpoint it reported.
func runAndKill(t *testing.T, exe, path string, seed uint64, d time.Duration) uint64 {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envCrashPath+"="+path, envCrashSeed+"="+strconv.FormatUint(seed, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, err := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "seq "), 10, 64); err == nil {
				atomic.StoreUint64(&last, n)
			}
		}
	}()
	// The kill moment: d is a random point in the child's cycles, the
	// fault this test injects; nothing is waited for.
	time.Sleep(d)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child ended on its own: %v", err)
	}
	return atomic.LoadUint64(&last)
}
