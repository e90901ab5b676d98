package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/pspf/pspf-edge/checkpoint"
	"github.com/pspf/pspf-edge/internal/atomicfile"
	"github.com/pspf/pspf-edge/state"
)

// A pipeline's stateful operators keep their state in the store its file
// chooses (`state: {store: bbolt | memory}`), behind one interface,
// state.Store; the operators see its tables through agent.StateTable.
//
// bbolt: state.db in the data directory; the recovery and the resets of
// stateful_stage.go and stateful_reset.go.
//
// memory: the state in RAM under the same byte budget
// (PipelineDeps.StateCacheBytes), which is a hard bound there (a Put over
// it fails: state.ErrFull). A checkpoint writes no state: it syncs the
// outbox up to its end, records the position in the store and acks the
// pipeline log's stateful cursor up to it, as with bbolt. Nothing of the
// state survives the agent process, so after a restart (or a crash) the
// stage starts with empty state at the record after the cursor's ack: the
// records before it were processed, their outputs are durable in the
// outbox, and their state is gone (replaying what the log still holds of
// them would rebuild an arbitrary part of it and send outputs again).
// Records after the ack, processed before a crash but not checkpointed,
// are processed again, from empty state; their outputs carry the same
// stable IDs (at-least-once, as with bbolt). A reload, or a restart of the
// pipeline after a failure, keeps the state when the generation before
// ended with a checkpoint: StateKeeper hands the store over.
//
// Switching stores: memoryMarker, written before the first memory run
// touches anything, says that a state.db beside it is older than the
// position the pipeline log has reached. Recovering it would restore stale
// state and cut the outbox back to its old end, deleting outputs not yet
// delivered; so the memory run deletes state.db, and a bbolt run that finds
// the marker starts as a memory run does, from empty state after the
// cursor's ack, and removes the marker after its first checkpoint.

// stateFile is the bbolt store's file in the pipeline's data directory.
const stateFile = "state.db"

// memoryMarker is a file beside state.db whose presence says that the
// pipeline last kept its state in memory.
const memoryMarker = "state.memory"

// openStore opens the pipeline's state store and loads its checkpoint (ok
// false: none). It needs s.reader.
func (s *statefulStage) openStore() (checkpoint.Checkpoint, bool, error) {
	deps := s.p.deps
	carried := deps.States.take(s.p.spec.Name)
	if s.p.spec.State.Store == StoreMemory {
		return s.openMemory(carried)
	}
	if carried != nil {
		carried.Close()
	}
	dir := deps.DataDir
	if _, err := os.Stat(filepath.Join(dir, memoryMarker)); err == nil {
		if _, err := removeBoltState(dir); err != nil {
			return checkpoint.Checkpoint{}, false, err
		}
		s.afterAck, s.fromMemory = true, true
	}
	return s.openState(filepath.Join(dir, stateFile))
}

// openMemory opens the memory store: the one the previous generation
// handed over, if any, else a new, empty one.
func (s *statefulStage) openMemory(carried *state.Memory) (checkpoint.Checkpoint, bool, error) {
	deps := s.p.deps
	s.volatile, s.afterAck = true, true
	marker := filepath.Join(deps.DataDir, memoryMarker)
	if _, err := os.Stat(marker); err != nil {
		err := atomicfile.WriteDurable(marker, []byte("this pipeline keeps its state in memory: a state.db beside this file is stale and is not recovered\n"), 0o600)
		if err != nil {
			return checkpoint.Checkpoint{}, false, fmt.Errorf("write %s: %w", memoryMarker, err)
		}
	}
	had, err := removeBoltState(deps.DataDir)
	if err != nil {
		return checkpoint.Checkpoint{}, false, err
	}
	if had {
		s.log.Info("state store is memory: the state file of an earlier run with the bbolt store is deleted, its state is not used",
			"path", filepath.Join(deps.DataDir, stateFile))
	}
	if carried != nil {
		s.db, s.carried = carried, true
	} else if s.db, err = state.NewMemory(state.Options{CacheBytes: deps.StateCacheBytes, Logger: s.log, Now: deps.Now}); err != nil {
		return checkpoint.Checkpoint{}, false, err
	}
	return checkpoint.Load(s.db)
}

// removeBoltState deletes state.db, the note beside it and markerName,
// and fsyncs the directory. had says whether state.db was there.
func removeBoltState(dir string) (had bool, err error) {
	path := filepath.Join(dir, stateFile)
	_, err = os.Lstat(path)
	had = err == nil
	for _, p := range []string{path, path + ".suspect", filepath.Join(dir, markerName)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return had, fmt.Errorf("remove the state of the bbolt store: %w", err)
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return had, fmt.Errorf("remove the state of the bbolt store: %w", err)
	}
	return had, nil
}

// removeMemoryMarker removes memoryMarker once state.db holds a
// checkpoint, durably.
func (s *statefulStage) removeMemoryMarker() error {
	dir := s.p.deps.DataDir
	if err := os.Remove(filepath.Join(dir, memoryMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// announceStore logs, once at start, what the memory store means for this
// run. The bbolt store says nothing unless it recovers or resets.
func (s *statefulStage) announceStore() {
	st := s.db.Stats()
	switch {
	case s.volatile && !s.carried:
		s.log.Info("state store is memory: state is not kept across restarts; the stateful operators start with empty state",
			"log_next", s.next, "budget", st.Budget)
	case s.volatile:
		s.log.Info("state store is memory: the previous generation's state is carried over; it is not kept across restarts",
			"log_next", s.next, "keys", st.Entries, "bytes", st.CacheBytes, "budget", st.Budget)
	case s.fromMemory:
		s.log.Info("state store is bbolt; the last run kept its state in memory: the stateful operators start with empty state",
			"log_next", s.next)
	}
}

// refreshStats takes the store's counters for status and metrics, which
// must not wait for the store; the stage's loop calls it with the timers,
// about every TimerInterval. The caller holds mu, or the stage is not
// running yet.
func (s *statefulStage) refreshStats() {
	st := s.db.Stats()
	if st.Refused > s.refusedAt {
		s.refused.Add(int(st.Refused - s.refusedAt))
		s.refusedAt = st.Refused
	}
	s.stats.Store(&st)
}

// closeStore closes the state store. A memory store whose state is that
// of its last checkpoint is handed over to the next generation instead.
func (s *statefulStage) closeStore() error {
	m, ok := s.db.(*state.Memory)
	if !ok || s.p.deps.States == nil {
		return s.db.Close()
	}
	if next := m.Handover(); next != nil {
		s.p.deps.States.put(s.p.spec.Name, next)
	}
	return nil
}

// StateKeeper hands the memory state stores of pipelines (`state: {store:
// memory}`) from one generation to the next, so that a reload, or a
// restart of a pipeline after a failure, keeps their state as one of a
// pipeline with state.db does. A generation that ended with a checkpoint
// (state.Memory.Handover) leaves its store here under the pipeline's name;
// the next generation of that name takes it. The zero value is ready; a nil
// *StateKeeper keeps nothing. It is safe for concurrent use.
type StateKeeper struct {
	mu sync.Mutex
	m  map[string]*state.Memory
}

// take removes and returns the store kept for the pipeline called name,
// or nil.
func (k *StateKeeper) take(name string) *state.Memory {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.m[name]
	delete(k.m, name)
	return m
}

// put keeps m for the next generation of the pipeline called name.
func (k *StateKeeper) put(name string, m *state.Memory) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = make(map[string]*state.Memory)
	}
	if old := k.m[name]; old != nil && old != m {
		old.Close()
	}
	k.m[name] = m
}

// Forget drops the state kept for the pipeline called name: call it when
// the pipeline is removed, so that one added again under that name starts
// empty.
func (k *StateKeeper) Forget(name string) {
	if m := k.take(name); m != nil {
		m.Close()
	}
}
