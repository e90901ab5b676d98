package agent

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"
)

// StateTable is the keyed state of one stateful operator: opaque byte keys
// and values, kept in the pipeline's state store (package state provides
// it; the runner hands it over through Env.State). With the default store,
// bbolt, the table lives in the pipeline's state file and is cached in
// memory; changes reach the file only with the next checkpoint, atomically
// with the log cursor they reflect, so after a crash the table is exactly
// as it was at the last checkpoint and the records after it are replayed.
// With `state: {store: memory}` the table lives in memory only and starts
// empty after every agent restart, and a Put that would exceed the store's
// byte budget fails (the error wraps state.ErrFull): the operator decides
// what a refused write costs (dedup fails its batch).
//
// Get appends the value to dst; neither Get nor Put retain their arguments.
// Range visits the live keys in byte order until fn returns false; fn may
// call the table's other methods.
type StateTable interface {
	Get(key, dst []byte) ([]byte, bool, error)
	Put(key, val []byte) error
	Delete(key []byte) error
	Range(fn func(k, v []byte) bool) error
}

// StateFunc opens the calling component's state table. A ttl > 0 expires
// keys not written for that long on the state clock, which counts the
// agent's running time and ignores wall-clock jumps (use it to collect
// garbage, not for semantics). Calling it twice returns the same table.
type StateFunc func(ttl time.Duration) (StateTable, error)

// A stateful operator is an Operator whose factory is registered with
// Stateful: true: it runs after the pipeline log and keeps per-key state in
// its StateTable, which it gets from Env.State in its constructor, where it
// also restores whatever it keeps in memory (the table holds the last
// checkpoint's state). One that keeps everything in its table and acts only
// on input (dedup, throttle) needs nothing more; the optional interfaces
// below add a snapshot of what it keeps in memory (Snapshotter) and action
// without input (TimerHandler). The runner calls Process, OnTimer and
// Snapshot from one goroutine, never concurrently.

// Snapshotter is implemented by a stateful operator that keeps part of its
// state in memory only (hot per-key aggregates, watermarks, timers).
// Snapshot writes it to the operator's table. The runner calls it right
// before each checkpoint, with the operator paused at a batch boundary;
// after it returns, the table alone must be enough to resume.
type Snapshotter interface {
	Snapshot(ctx context.Context) error
}

// TimerHandler is implemented by a stateful operator that acts without
// input: fires processing-time windows, emits early results. The runner
// calls OnTimer at least every 100ms (runner.TimerInterval) with an empty
// b whose Now is the batch clock (the wall clock with its monotonic
// reading, or the virtual clock of `pspf-edge test`); records the operator
// adds to b flow on through the chain. Operators measure time with
// b.Now.Sub, never with the wall value alone, so that a wall-clock jump
// neither fires nor freezes anything.
type TimerHandler interface {
	OnTimer(ctx context.Context, b *Batch) error
}

// EndOfInputer is implemented by stateful operators that hold results back
// until time moves on (windows). The deterministic runner of `pspf-edge test`
// calls EndOfInput once after the last input record, so that the operator
// emits what it still holds (open windows, as if the watermark had passed
// them). The live runner never calls it: there, state is checkpointed instead.
type EndOfInputer interface {
	EndOfInput(ctx context.Context, b *Batch) error
}

// memTable is a StateTable in memory, for constructing a stateful operator
// outside a pipeline (Env.State nil): a unit test. It is safe for
// concurrent use.
type memTable struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemTable() *memTable { return &memTable{m: map[string][]byte{}} }

// Get appends key's value to dst.
func (t *memTable) Get(key, dst []byte) ([]byte, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.m[string(key)]
	if !ok {
		return dst, false, nil
	}
	return append(dst, v...), true, nil
}

// Put sets key to a copy of val.
func (t *memTable) Put(key, val []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[string(key)] = bytes.Clone(val)
	return nil
}

// Delete removes key.
func (t *memTable) Delete(key []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, string(key))
	return nil
}

// Range visits the keys in byte order; it works on a copy, so fn may change
// the table.
func (t *memTable) Range(fn func(k, v []byte) bool) error {
	t.mu.Lock()
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		keys = append(keys, k)
	}
	vals := make(map[string][]byte, len(keys))
	for _, k := range keys {
		vals[k] = t.m[k]
	}
	t.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		if !fn([]byte(k), vals[k]) {
			break
		}
	}
	return nil
}

// StateTableOf returns the component's state table: from env.State when the
// runner provides one, else a new table in memory (an operator built
// outside a pipeline, in a unit test).
func StateTableOf(env Env, ttl time.Duration) (StateTable, error) {
	if env.State == nil {
		return newMemTable(), nil
	}
	return env.State(ttl)
}
