package runner

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/state"
)

// The kafka store (`state: {store: kafka, changelog: TOPIC}`) keeps each
// input partition's state in partition p of a compacted changelog topic
// (agent.Changelog, on the Kafka source's cluster), with state.db as its
// cache:
//
//   - every checkpoint appends, per owned partition, the keys its
//     operators changed since the last one with their current values (a
//     deleted key: a tombstone), its position last, and waits for
//     acks=all before the bbolt transaction commits; the changelog is
//     therefore never behind state.db. The changelog offset reached is
//     kept in state.db with the partition (partCLKey);
//   - an assignment reads partition p of the changelog from that offset
//     (0 without a cache) to its end into the partition's tables, then
//     builds the partition's operators over them: a restart of the same
//     agent reads only the tail, another agent (or one whose state.db was
//     deleted) all of it.
//
// A changelog key is the table's name, a zero byte and the table's key;
// its value is a version byte and the table's value.
//
// Without transactions an append that fails half-way may leave the
// changed keys of a partition in the changelog without its position, the
// last record: a member that restores it then applies again the records
// between the old position and the state. With `delivery: exactly_once`
// on the Kafka sink the changes go in the checkpoint's transaction
// instead (stateful_eos.go).

// partCLKey is the key of the changelog offset a partition's cache holds
// the state of, in its meta table; it is local, never in the changelog.
var partCLKey = []byte("changelog")

// clValueVersion is the first byte of every changelog value.
const clValueVersion = 1

// RestoreStatus is the progress of a partition's restore from the
// changelog, for status.
type RestoreStatus struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	From      int64     `json:"from"`    // changelog offset the restore started at
	At        int64     `json:"at"`      // reached
	End       int64     `json:"end"`     // the changelog's end at the start (-1: not known yet)
	Records   int64     `json:"records"` // read so far
	Since     time.Time `json:"since"`
}

// logged returns t wrapped so that its changes are noted for the
// changelog, and notes the table.
func (pc *partChain) logged(t state.Table) agent.StateTable {
	pc.tables[t.Name()] = t
	return &loggedTable{Table: t, pc: pc}
}

// touch notes a changed key of a table.
func (pc *partChain) touch(table string, key []byte) {
	m := pc.dirty[table]
	if m == nil {
		m = map[string]struct{}{}
		pc.dirty[table] = m
	}
	m[string(key)] = struct{}{}
}

// loggedTable is an operator's table of a partition with the kafka store:
// it notes the keys it changes. A Put of the value the key has already
// changes nothing (the window operator writes its metadata at every
// snapshot).
type loggedTable struct {
	state.Table
	pc  *partChain
	buf []byte
}

// Put sets key to val and notes the change.
func (t *loggedTable) Put(key, val []byte) error {
	old, ok, err := t.Table.Get(key, t.buf[:0])
	t.buf = old[:0]
	if err == nil && ok && bytes.Equal(old, val) {
		return nil
	}
	if err := t.Table.Put(key, val); err != nil {
		return err
	}
	t.pc.touch(t.Name(), key)
	return nil
}

// Delete removes key and notes the change.
func (t *loggedTable) Delete(key []byte) error {
	if err := t.Table.Delete(key); err != nil {
		return err
	}
	t.pc.touch(t.Name(), key)
	return nil
}

// appendChanges appends a partition's changed keys, position last, to
// the changelog and notes the offset reached. The caller holds mu (the
// stage is paused for the checkpoint's capture).
func (s *statefulStage) appendChanges(ctx context.Context, pc *partChain) error {
	recs, err := s.changes(pc)
	if err != nil || len(recs) == 0 {
		return err
	}
	next, err := s.pt.cl.Append(ctx, pc.tp.Partition, recs)
	if err != nil {
		s.pt.clErrors.Inc()
		return fmt.Errorf("changelog: %w", err)
	}
	s.pt.appended.Add(len(recs))
	clear(pc.dirty)
	return s.noteCLOffset(pc, next)
}

// changes returns a partition's changed keys with their values (nil: a
// tombstone), its position last. The caller holds mu.
func (s *statefulStage) changes(pc *partChain) ([]agent.ChangelogRecord, error) {
	if len(pc.dirty) == 0 {
		return nil, nil
	}
	var recs []agent.ChangelogRecord
	var pos *agent.ChangelogRecord
	names := make([]string, 0, len(pc.dirty))
	for n := range pc.dirty {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t := pc.tables[name]
		if t == nil {
			continue
		}
		for k := range pc.dirty[name] {
			rec := agent.ChangelogRecord{Key: clKey(name, []byte(k))}
			v, ok, err := t.Get([]byte(k), []byte{clValueVersion})
			if err != nil {
				return nil, fmt.Errorf("changelog: read %s: %w", name, err)
			}
			if ok {
				rec.Value = v
			}
			if t == pc.meta && k == string(partNextKey) {
				pos = &rec
				continue
			}
			recs = append(recs, rec)
		}
	}
	if pos != nil {
		recs = append(recs, *pos)
	}
	return recs, nil
}

// noteCLOffset notes in the partition's cache the changelog offset its
// state reflects.
func (s *statefulStage) noteCLOffset(pc *partChain, next int64) error {
	var buf [binary.MaxVarintLen64]byte
	if err := pc.meta.Put(partCLKey, buf[:binary.PutVarint(buf[:], next)]); err != nil {
		return fmt.Errorf("changelog: note the offset: %w", err)
	}
	return nil
}

// clKey is a changelog record's key: the table's name, 0, the key.
func clKey(table string, key []byte) []byte {
	b := make([]byte, 0, len(table)+1+len(key))
	b = append(b, table...)
	b = append(b, 0)
	return append(b, key...)
}

// restore reads partition pc's changelog from the offset its cache holds
// to the end into its tables, and notes the end. Its progress is in
// status (and a log line about every second while it runs).
func (s *statefulStage) restore(ctx context.Context, pc *partChain) error {
	from := int64(0)
	if v, ok, err := pc.meta.Get(partCLKey, nil); err != nil {
		return fmt.Errorf("changelog: read the cache's offset: %w", err)
	} else if ok {
		if n, k := binary.Varint(v); k > 0 {
			from = n
		}
	}
	st := &RestoreStatus{Topic: pc.tp.Topic, Partition: pc.tp.Partition, From: from, At: from, End: -1, Since: time.Now()}
	s.pt.cmu.Lock()
	s.pt.restoring[pc.tp] = st
	s.pt.cmu.Unlock()
	defer func() {
		s.pt.cmu.Lock()
		delete(s.pt.restoring, pc.tp)
		s.pt.cmu.Unlock()
	}()
	start := time.Now()
	var n int64
	apply := func(key, value []byte) error {
		i := bytes.IndexByte(key, 0)
		if i <= 0 || i == len(key)-1 {
			return nil // not ours: skipped
		}
		name, k := string(key[:i]), key[i+1:]
		t := pc.tables[name]
		if t == nil {
			var err error
			if t, err = s.db.Table(name, 0); err != nil {
				return fmt.Errorf("changelog: table %q: %w", name, err)
			}
			pc.tables[name] = t
		}
		var err error
		if len(value) == 0 {
			err = t.Delete(k)
		} else if value[0] == clValueVersion {
			err = t.Put(k, value[1:])
		}
		if err != nil {
			return fmt.Errorf("changelog: restore %s: %w", name, err)
		}
		n++
		return nil
	}
	progress := func(at, end int64) {
		s.pt.cmu.Lock()
		st.At, st.End, st.Records = at, end, n
		s.pt.cmu.Unlock()
		s.log.Info("restoring partition state from the changelog", "topic", pc.tp.Topic, "partition", pc.tp.Partition,
			"at", at, "end", end, "records", n, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	next, err := s.pt.cl.Read(ctx, pc.tp.Partition, from, apply, progress)
	s.pt.restored.Add(int(n))
	if err != nil {
		s.pt.clErrors.Inc()
		return err
	}
	var buf [binary.MaxVarintLen64]byte
	if err := pc.meta.Put(partCLKey, buf[:binary.PutVarint(buf[:], next)]); err != nil {
		return fmt.Errorf("changelog: note the offset: %w", err)
	}
	s.log.Info("partition state restored from the changelog", "topic", pc.tp.Topic, "partition", pc.tp.Partition,
		"from", from, "to", next, "records", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Restoring returns the restores from the changelog running now.
func (s *statefulStage) Restoring() []RestoreStatus {
	if s.pt == nil {
		return nil
	}
	s.pt.cmu.Lock()
	defer s.pt.cmu.Unlock()
	out := make([]RestoreStatus, 0, len(s.pt.restoring))
	for _, st := range s.pt.restoring {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}
