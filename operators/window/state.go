package window

import (
	"context"
	"encoding/binary"
	"math"
)

// The operator's table holds one entry per key, "k" + key, and one entry of
// operator metadata, "m". Both are versioned by their first byte.
//
// Key entry: version, count-window sequence, number of windows, number of
// aggregates, then per window start, end, records, early emissions and each
// aggregate's state (agg.go). Metadata: version, whether an event time was
// seen, the highest event time, the processing clock, the last early
// emission, the earliest window end of all keys (after a restart every
// key is in the table), and the end up to which windows were emitted.

// metaVersion is the version of the metadata entry. keyVersion is that of
// key entries: 2 stores of each aggregate only what its function needs
// (aggState.appendTo); version 1 entries, which stored every aggregate's full
// state, are still read.
const (
	metaVersion = 1
	keyVersion  = 2
)

var metaKey = []byte("m")

// Snapshot writes the keys changed since the last snapshot, and the
// watermark and timers, to the table. The runner calls it before each
// checkpoint; the bytes written grow with the changed keys, not with all keys.
func (w *Window) Snapshot(context.Context) error {
	for _, ks := range w.dirty {
		// drop clears dirty, so a released or evicted key is skipped; a
		// struct reused for another key is written under its current key.
		if !ks.dirty {
			continue
		}
		if err := w.writeKey(ks); err != nil {
			return err
		}
		if len(ks.wins) == 0 && ks.seq == 0 {
			w.drop(ks) // nothing left to keep: written (deleted) and released
		}
	}
	clear(w.dirty)
	w.dirty = w.dirty[:0]
	m := append(w.vbuf[:0], metaVersion)
	if w.hasT {
		m = append(m, 1)
	} else {
		m = append(m, 0)
	}
	proc := w.procStored
	if w.procStarted {
		proc = max(proc, w.lastProc())
	}
	m = binary.AppendVarint(m, w.maxT)
	m = binary.AppendVarint(m, proc)
	m = binary.AppendVarint(m, w.lastEarly)
	m = binary.AppendVarint(m, min(w.nextFire, w.spillMin))
	m = binary.AppendVarint(m, w.firedUpTo)
	w.vbuf = m
	if err := w.table.Put(metaKey, m); err != nil {
		return errorf("write state: %w", err)
	}
	return nil
}

// lastProc is the processing clock as of the last call to procNow.
func (w *Window) lastProc() int64 { return w.procLast }

// writeKey writes ks to the table (or deletes it there when it holds
// nothing) and marks it clean. A write that fails (a memory state store at
// its budget refuses it) leaves ks dirty, to be written again.
func (w *Window) writeKey(ks *keyState) error {
	w.kbuf = append(append(w.kbuf[:0], 'k'), ks.key...)
	if len(ks.wins) == 0 && ks.seq == 0 {
		if ks.inTable {
			if err := w.table.Delete(w.kbuf); err != nil {
				return errorf("delete state of %q: %w", ks.key, err)
			}
			ks.inTable = false
		}
		ks.dirty = false
		return nil
	}
	w.vbuf = w.encodeKey(w.vbuf[:0], ks)
	if err := w.table.Put(w.kbuf, w.vbuf); err != nil {
		return errorf("write state of %q: %w", ks.key, err)
	}
	ks.dirty = false
	ks.inTable = true
	w.tableKeys = true
	w.earlyScan = w.every > 0
	return nil
}

func (w *Window) encodeKey(dst []byte, ks *keyState) []byte {
	dst = append(dst, keyVersion)
	dst = binary.AppendVarint(dst, ks.seq)
	dst = binary.AppendUvarint(dst, uint64(len(ks.wins)))
	dst = binary.AppendUvarint(dst, uint64(len(w.aggs)))
	for i := range ks.wins {
		cw := &ks.wins[i]
		dst = binary.AppendVarint(dst, cw.start)
		dst = binary.AppendVarint(dst, cw.end)
		dst = binary.AppendVarint(dst, cw.n)
		dst = binary.AppendVarint(dst, cw.early)
		for j := range cw.aggs {
			dst = cw.aggs[j].appendTo(dst, w.aggs[j].fn)
		}
	}
	return dst
}

// decodeKey reads a key entry into ks (its key is left as it is).
func (w *Window) decodeKey(ks *keyState, v []byte) error {
	d := decoder{b: v}
	version := d.byte()
	if version != 1 && version != keyVersion {
		return errorf("state version %d not supported", version)
	}
	ks.seq = d.varint()
	nwin := d.uvarint()
	naggs := d.uvarint()
	if naggs != uint64(len(w.aggs)) {
		return errorf("state has %d aggregates, the config %d", naggs, len(w.aggs))
	}
	if nwin > 1<<16 {
		return errShort
	}
	ks.wins = ks.wins[:0]
	for range nwin {
		if len(ks.wins) < cap(ks.wins) {
			ks.wins = ks.wins[:len(ks.wins)+1]
		} else {
			ks.wins = append(ks.wins, win{})
		}
		cw := &ks.wins[len(ks.wins)-1]
		aggs := cw.aggs
		*cw = win{start: d.varint(), end: d.varint(), n: d.varint(), early: d.varint()}
		if cap(aggs) < len(w.aggs) {
			aggs = make([]aggState, len(w.aggs))
		}
		cw.aggs = aggs[:len(w.aggs)]
		for j := range cw.aggs {
			cw.aggs[j].read(&d, w.aggs[j].fn, version)
		}
	}
	if d.err != nil {
		ks.wins = ks.wins[:0]
		return d.err
	}
	if w.kind != counting {
		// Windows emitted by fireSpilled while the key was in the table.
		for i := 0; i < len(ks.wins); {
			if ks.wins[i].end <= w.firedUpTo {
				w.closeWin(ks, i)
				continue
			}
			i++
		}
	}
	w.setMinEnd(ks)
	return nil
}

// restore reads the operator metadata; keys are read on demand.
func (w *Window) restore() error {
	v, ok, err := w.table.Get(metaKey, nil)
	if err != nil {
		return errorf("read state: %w", err)
	}
	if !ok {
		return nil
	}
	d := decoder{b: v}
	if d.byte() != metaVersion {
		return errorf("state version %d not supported", v[0])
	}
	w.hasT = d.byte() == 1
	w.maxT = d.varint()
	w.procStored = d.varint()
	w.lastEarly = d.varint()
	w.spillMin = d.varint()
	w.firedUpTo = d.varint()
	if d.err != nil {
		return errorf("read state: %w", d.err)
	}
	if !w.hasT {
		w.maxT = math.MinInt64
	}
	w.tableKeys = true
	w.earlyScan = w.every > 0
	return nil
}
