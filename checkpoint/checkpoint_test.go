package checkpoint

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/wait"
	"github.com/pspf/pspf-edge/state"
)

func openDB(t *testing.T, path string, budget int64) *state.DB {
	t.Helper()
	db, err := state.Open(path, state.Options{CacheBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// pipeline is a fake runner: one goroutine-safe counter in a table, and a
// log cursor that moves with it under the same lock, like a runner that
// applies a batch and advances its cursor at the batch boundary.
type pipeline struct {
	mu     sync.Mutex
	tb     state.Table
	cursor uint64
}

func (p *pipeline) step(t *testing.T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cursor++
	if err := p.tb.Put([]byte("n"), binary.BigEndian.AppendUint64(nil, p.cursor)); err != nil {
		t.Error(err)
	}
}

func (p *pipeline) capture(ctx context.Context) (Position, func(), error) {
	p.mu.Lock()
	return Position{Log: p.cursor, Outboxes: map[string]uint64{"uplink": p.cursor * 10}}, p.mu.Unlock, nil
}

func TestNowAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 1<<20)
	if _, ok, err := Load(db); ok || err != nil {
		t.Fatalf("Load on a new DB = ok %v, err %v; want false, nil", ok, err)
	}
	tb, _ := db.Table("op1.count", 0)
	p := &pipeline{tb: tb}
	m, err := New(db, Options{Capture: p.capture})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		p.step(t)
	}
	cp, st, err := m.Now(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != 1 || cp.Log != 5 || cp.Outboxes["uplink"] != 50 || st.Written != 1 {
		t.Errorf("Now = %+v, written %d; want seq 1, log 5, uplink 50, written 1", cp, st.Written)
	}
	// Nothing changed: nothing is written.
	cp2, st2, err := m.Now(context.Background())
	if err != nil || cp2.Seq != 1 || st2.Seq != 0 {
		t.Errorf("unchanged Now = seq %d, stats seq %d, %v; want 1, 0, nil", cp2.Seq, st2.Seq, err)
	}
	p.step(t) // not checkpointed: lost on reopen
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, 1<<20)
	got, ok, err := Load(db)
	if err != nil || !ok {
		t.Fatalf("Load = ok %v, err %v", ok, err)
	}
	if got.Seq != 1 || got.Log != 5 || got.Outboxes["uplink"] != 50 || got.Time.IsZero() {
		t.Errorf("Load = %+v, want seq 1, log 5, uplink 50", got)
	}
	tb, _ = db.Table("op1.count", 0)
	v, _, _ := tb.Get([]byte("n"), nil)
	if n := binary.BigEndian.Uint64(v); n != got.Log {
		t.Errorf("state n = %d, want the checkpoint's log cursor %d", n, got.Log)
	}
}

// TestRunConsistent runs the manager against a busy pipeline and checks
// that every committed checkpoint holds state and cursor from the same
// instant.
func TestRunConsistent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 1<<20)
	tb, _ := db.Table("op1.count", 0)
	p := &pipeline{tb: tb}
	m, err := New(db, Options{Capture: p.capture, Interval: MinInterval})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	// Step until five checkpoints have committed: a count, not a time
	// window, so a slow machine runs longer instead of checking less.
	deadline := time.Now().Add(30 * time.Second)
	for cp, _, _ := m.Last(); cp.Seq < 5; cp, _, _ = m.Last() {
		if time.Now().After(deadline) {
			t.Fatalf("Last = %+v after 30s of steps, want 5 checkpoints", cp)
		}
		p.step(t)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	last, _, ok := m.Last()
	if !ok || last.Seq < 5 {
		t.Fatalf("Last = %+v, ok %v; want 5 checkpoints or more", last, ok)
	}
	_ = db.Close()
	db = openDB(t, path, 1<<20)
	cp, _, _ := Load(db)
	tb, _ = db.Table("op1.count", 0)
	v, _, _ := tb.Get([]byte("n"), nil)
	if n := binary.BigEndian.Uint64(v); n != cp.Log || cp.Seq != last.Seq {
		t.Errorf("after reopen: state n = %d, checkpoint %+v; want n = log, seq %d", n, cp, last.Seq)
	}
}

// TestPressure: with a long interval, dirty state over half of the budget
// triggers a checkpoint.
func TestPressure(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"), 64<<10)
	tb, _ := db.Table("t", 0)
	var cursor atomic.Uint64
	m, err := New(db, Options{Interval: time.Hour, Capture: func(ctx context.Context) (Position, func(), error) {
		return Position{Log: cursor.Load()}, nil, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	for i := range 2000 {
		_ = tb.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), make([]byte, 32))
		cursor.Add(1)
	}
	wait.For(t, 5*time.Second, "a checkpoint after the dirty state passed half of the budget", func() bool {
		_, _, ok := m.Last()
		return ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCaptureErrors(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"), 0)
	fail := errors.New("pipeline busy")
	var calls, resumes atomic.Int32
	m, err := New(db, Options{Interval: MinInterval, Capture: func(ctx context.Context) (Position, func(), error) {
		if calls.Add(1) == 1 {
			return Position{}, nil, fail
		}
		return Position{Log: 1, Outboxes: map[string]uint64{"": 1}}, func() { resumes.Add(1) }, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Now(context.Background()); !errors.Is(err, fail) {
		t.Errorf("Now with failing capture = %v, want %v", err, fail)
	}
	if _, _, err := m.Now(context.Background()); err == nil {
		t.Error("Now with an empty outbox name: no error")
	}
	if resumes.Load() != 1 {
		t.Errorf("resume called %d times, want 1", resumes.Load())
	}
	if _, err := New(db, Options{}); err == nil {
		t.Error("New without Capture: no error")
	}
	if _, err := New(db, Options{Capture: m.opts.Capture, Interval: time.Microsecond}); err == nil {
		t.Error("New with a 1 µs interval: no error")
	}
}

func TestLoadForeignMeta(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"), 0)
	if _, err := db.Checkpoint(map[string][]byte{"other": {1}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(db); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("Load = %v, want ErrNoMetadata", err)
	}
}

// TestRunSkipsFailedCapture: a failing Capture skips a checkpoint, Run goes
// on; a failing commit (here: the DB closed under it) ends Run with the
// error.
func TestRunSkipsFailedCapture(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"), 0)
	var calls atomic.Int32
	m, err := New(db, Options{Interval: MinInterval, Capture: func(ctx context.Context) (Position, func(), error) {
		if calls.Add(1) <= 2 {
			return Position{}, nil, errors.New("busy")
		}
		return Position{Log: uint64(calls.Load())}, nil, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- m.Run(context.Background()) }()
	wait.For(t, 5*time.Second, "a checkpoint after the capture recovered", func() bool {
		cp, _, ok := m.Last()
		return ok && cp.Seq >= 1
	})
	_ = db.Close()
	select {
	case err := <-done:
		if !errors.Is(err, state.ErrClosed) {
			t.Errorf("Run after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the DB closed")
	}
}

// TestEmittedRoundTrip: the position of a replay after a state reset keeps
// its Emitted mark across a reopen; a normal one has none.
func TestEmittedRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path, 0)
	pos := Position{Log: 40, Emitted: 95, Outboxes: map[string]uint64{"outbox": 12}}
	m, err := New(db, Options{Capture: func(context.Context) (Position, func(), error) { return pos, nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Now(context.Background()); err != nil {
		t.Fatal(err)
	}
	pos.Emitted = 0 // the replay passed it: the next position is a normal one
	pos.Log = 96
	if cp, st, err := m.Now(context.Background()); err != nil || st.Seq != 2 || cp.Emitted != 0 {
		t.Fatalf("second checkpoint: %+v seq %d, %v; want seq 2 without Emitted", cp, st.Seq, err)
	}
	db.Close()
	db = openDB(t, path, 0)
	cp, ok, err := Load(db)
	if err != nil || !ok || !cp.Position.Equal(pos) {
		t.Errorf("Load = %+v, %v, %v; want %+v", cp, ok, err, pos)
	}
}

// TestLoadDamagedMeta: a checkpoint record that does not decode is damage.
func TestLoadDamagedMeta(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"), 0)
	if _, err := db.Checkpoint(map[string][]byte{metaVersion: {formatVersion}, metaLog: {1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(db); !errors.Is(err, state.ErrCorrupt) {
		t.Errorf("Load = %v, want state.ErrCorrupt", err)
	}
}

// TestMemoryStore: the Manager checkpoints a state.Memory like a DB: the
// position is recorded (Load returns it), nothing is written, and an
// unchanged position with unchanged state commits nothing new.
func TestMemoryStore(t *testing.T) {
	mem, err := state.NewMemory(state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tb, _ := mem.Table("op1.count", 0)
	p := &pipeline{tb: tb}
	m, err := New(mem, Options{Capture: p.capture})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		p.step(t)
	}
	cp, st, err := m.Now(context.Background())
	if err != nil || cp.Seq != 1 || cp.Log != 5 || st.BytesWritten != 0 {
		t.Fatalf("Now = %+v, %d bytes written, %v; want seq 1, log 5, nothing written", cp, st.BytesWritten, err)
	}
	if got, ok, err := Load(mem); err != nil || !ok || got.Log != 5 || got.Outboxes["uplink"] != 50 {
		t.Errorf("Load = %+v, %v, %v; want log 5, uplink 50", got, ok, err)
	}
	if cp2, st2, err := m.Now(context.Background()); err != nil || cp2.Seq != 1 || st2.Seq != 0 {
		t.Errorf("unchanged Now = seq %d, stats seq %d, %v; want 1, 0, nil", cp2.Seq, st2.Seq, err)
	}
	p.step(t)
	if cp3, _, err := m.Now(context.Background()); err != nil || cp3.Seq != 2 || cp3.Log != 6 {
		t.Errorf("Now after a step = %+v, %v; want seq 2, log 6", cp3, err)
	}
}
