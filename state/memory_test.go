package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/testkit"
)

func newMemory(t testing.TB, o Options) *Memory {
	t.Helper()
	m, err := NewMemory(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// TestMemoryFullEpisode: a full Memory refuses new state with ErrFull, one
// WARN for the whole episode however many writes it refuses; keys whose
// TTL has passed are removed to make room before anything is refused; the
// episode ends with one INFO once deletes bring the state under three
// quarters of the budget, and the next refusal starts a new one.
func TestMemoryFullEpisode(t *testing.T) {
	const budget = 8 << 10
	var logs testkit.LogBuffer
	clk := newClock()
	m := newMemory(t, Options{CacheBytes: budget, Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	seen := table(t, m, "op1.dedup", time.Minute)
	counts := table(t, m, "op2.count", 0)
	val := make([]byte, 50)
	fill := func(tb Table, prefix string) (accepted int) {
		for i := 0; ; i++ {
			err := tb.Put([]byte(fmt.Sprintf("%s%04d", prefix, i)), val)
			if errors.Is(err, ErrFull) {
				return accepted
			}
			if err != nil {
				t.Fatal(err)
			}
			accepted++
		}
	}
	n := fill(seen, "id")
	if w := logs.Count("level=WARN"); w != 1 {
		t.Fatalf("%d WARN lines after the first refusal, want 1", w)
	}
	clk.Advance(2 * time.Minute) // every key of op1.dedup has expired
	if got := fill(counts, "key"); got != n {
		t.Errorf("after the TTL passed, op2.count took %d keys, want the %d expired ones' room", got, n)
	}
	if i := logs.Count("has room again"); i != 1 {
		t.Errorf("%d INFO lines after the expired keys were removed, want 1 (the first episode ended)", i)
	}
	for range 100 {
		if err := counts.Put([]byte("one-more"), val); !errors.Is(err, ErrFull) {
			t.Fatalf("Put into a full store = %v, want ErrFull", err)
		}
	}
	if st := m.Stats(); st.Refused != 102 || st.CacheBytes > budget {
		t.Errorf("Stats = %+v; want 102 refused (one per fill, 100 more), within the budget", st)
	}
	if w := logs.Count("level=WARN"); w != 2 {
		t.Errorf("%d WARN lines for two episodes, the second of 101 refusals, want 2:\n%s", w, logs.String())
	}
	// Deleting a little does not end the episode; under 3/4 it does.
	for i := range n / 10 {
		_ = counts.Delete([]byte(fmt.Sprintf("key%04d", i)))
	}
	if i := logs.Count("has room again"); i != 1 {
		t.Errorf("the episode ended with the store still nearly full")
	}
	for i := range n / 2 {
		_ = counts.Delete([]byte(fmt.Sprintf("key%04d", i)))
	}
	if i := logs.Count("has room again"); i != 2 {
		t.Errorf("%d INFO lines ending episodes, want 2:\n%s", i, logs.String())
	}
	fill(counts, "again")
	if w := logs.Count("level=WARN"); w != 3 {
		t.Errorf("%d WARN lines after a third episode, want 3", w)
	}
}

// TestMemoryHandover: the new Memory holds the state, the checkpoint and
// the state clock of the old one; the old one and its tables are closed;
// a Memory changed since its last checkpoint hands nothing over.
func TestMemoryHandover(t *testing.T) {
	clk := newClock()
	m := newMemory(t, Options{Now: clk.Now})
	tb := table(t, m, "op1.dedup", time.Minute)
	put(t, tb, "a", "1")
	put(t, tb, "b", "2")
	if m.Handover() != nil {
		t.Fatal("Handover of a store with no checkpoint returned a store")
	}
	if err := tb.Put([]byte("c"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after a Handover that returned nil = %v, want ErrClosed", err)
	}

	m = newMemory(t, Options{Now: clk.Now})
	tb = table(t, m, "op1.dedup", time.Minute)
	put(t, tb, "a", "1")
	clk.Advance(30 * time.Second)
	put(t, tb, "b", "2")
	commit(t, m, map[string][]byte{"log": []byte("7")})
	before := m.Stats()
	next := m.Handover()
	if next == nil {
		t.Fatal("Handover of a store unchanged since its checkpoint returned nil")
	}
	defer next.Close()
	if err := tb.Put([]byte("c"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Put on the old store's table = %v, want ErrClosed", err)
	}
	if _, err := m.Table("op1.dedup", time.Minute); !errors.Is(err, ErrClosed) {
		t.Errorf("Table on the old store = %v, want ErrClosed", err)
	}
	if info, err := next.LastCheckpoint(); err != nil || info.Seq != 1 || string(info.Meta["log"]) != "7" {
		t.Errorf("LastCheckpoint of the new store = %+v, %v; want seq 1, log 7", info, err)
	}
	if st := next.Stats(); st.CacheBytes != before.CacheBytes || st.Entries != 2 {
		t.Errorf("new store's Stats = %+v, want the old one's %+v", st, before)
	}
	nt := table(t, next, "op1.dedup", time.Minute)
	if got := dump(t, nt); len(got) != 2 || got["a"] != "1" || got["b"] != "2" {
		t.Errorf("new store's table = %v, want a=1, b=2", got)
	}
	// The state clock and the TTL order go on: a expires 30 s before b.
	clk.Advance(45 * time.Second)
	if st := commit(t, next, nil); st.Expired != 1 {
		t.Errorf("checkpoint 75 s after a expired %d keys, want 1", st.Expired)
	}
	if got := dump(t, nt); len(got) != 1 || got["b"] != "2" {
		t.Errorf("after a's TTL the table = %v, want b=2", got)
	}
	put(t, nt, "c", "3")
	if next.Handover() != nil {
		t.Error("Handover of a store changed since its checkpoint returned a store")
	}
}

// TestMemoryHotPathAllocs: Get and Put of existing keys do not allocate.
func TestMemoryHotPathAllocs(t *testing.T) {
	m := newMemory(t, Options{})
	for _, ttl := range []time.Duration{0, time.Hour} {
		tb := table(t, m, fmt.Sprint("t", int(ttl.Seconds())), ttl)
		key, val := []byte("sensor-1"), make([]byte, 48)
		_ = tb.Put(key, val)
		dst := make([]byte, 0, 64)
		if n := testing.AllocsPerRun(1000, func() { dst, _, _ = tb.Get(key, dst[:0]) }); n != 0 {
			t.Errorf("ttl %v: Get hit: %v allocs, want 0", ttl, n)
		}
		if n := testing.AllocsPerRun(1000, func() { _ = tb.Put(key, val) }); n != 0 {
			t.Errorf("ttl %v: Put hit: %v allocs, want 0", ttl, n)
		}
	}
}

// TestMemoryHeapWithinBudget fills a Memory with small keys until it
// refuses them: the live heap it holds, measured after a GC, stays within
// its budget (the charge per entry covers the real cost) plus 1 MiB for
// the map's growth steps.
func TestMemoryHeapWithinBudget(t *testing.T) {
	const budget = 4 << 20
	const slack = 1 << 20
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	m, err := NewMemory(Options{CacheBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := m.Table("op1.count", time.Hour) // the TTL order list costs too
	var kb, vb [8]byte
	n := 0
	for ; ; n++ {
		binary.BigEndian.PutUint64(kb[:], uint64(n))
		binary.BigEndian.PutUint64(vb[:], uint64(n))
		if err := tb.Put(kb[:], vb[:]); errors.Is(err, ErrFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grown := int64(ms.HeapAlloc) - int64(base)
	t.Logf("%d keys of 8 bytes with 8-byte values in a budget of %d: live heap +%d bytes (%d per key), charged %d",
		n, budget, grown, grown/int64(n), m.Stats().CacheBytes)
	if grown > budget+slack {
		t.Errorf("live heap grew by %d bytes, want at most the budget %d + %d", grown, budget, slack)
	}
	if n < budget/(EntryOverhead+32) {
		t.Errorf("only %d keys fit in %d bytes", n, budget)
	}
	runtime.KeepAlive(m)
}
