package window

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// fire emits and closes every window whose end is at or before wm, in
// memory and in the table, in a deterministic order: by window start, key
// and ID.
func (w *Window) fire(wm int64) {
	if wm < w.nextFire && wm < w.spillMin {
		return
	}
	from := len(w.out)
	next := int64(never)
	for _, ks := range w.keys {
		if ks.minEnd <= wm {
			// A key left without windows stays in memory, ready for its
			// next window, until the next snapshot or spill releases it.
			w.fireWins(ks, wm)
			w.touch(ks)
		}
		next = min(next, ks.minEnd)
	}
	w.nextFire = next
	if w.spillMin <= wm {
		w.fireSpilled(wm)
	}
	// Every window that ends at or before wm has now been emitted, in
	// memory or in the table.
	w.firedUpTo = max(w.firedUpTo, wm)
	w.sortRecords(w.out[from:])
}

// sortRecords orders rs by window start, key and ID, whatever the order
// of the map and of the table they came from. It sorts indices, not the
// records themselves, which are large.
func (w *Window) sortRecords(rs []agent.Record) {
	if len(rs) < 2 {
		return
	}
	idx := w.idx[:0]
	for i := range rs {
		idx = append(idx, int32(i))
	}
	slices.SortFunc(idx, func(i, j int32) int {
		a, b := &rs[i], &rs[j]
		if c := cmp.Compare(a.EventTime, b.EventTime); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	tmp := append(w.tmp[:0], rs...)
	for i, j := range idx {
		rs[i] = tmp[j]
	}
	clear(tmp)
	w.idx, w.tmp = idx, tmp[:0]
}

// fireWins emits and closes the key's windows that end at or before wm.
func (w *Window) fireWins(ks *keyState, wm int64) {
	for i := 0; i < len(ks.wins); {
		if ks.wins[i].end <= wm {
			w.emit(ks, &ks.wins[i], true)
			w.closeWin(ks, i)
			continue
		}
		i++
	}
	w.setMinEnd(ks)
}

func (w *Window) setMinEnd(ks *keyState) {
	ks.minEnd = never
	if w.kind == counting {
		return
	}
	for i := range ks.wins {
		ks.minEnd = min(ks.minEnd, ks.wins[i].end)
	}
}

// closeWin removes window i, keeping its aggregate buffers for reuse.
func (w *Window) closeWin(ks *keyState, i int) {
	aggs := ks.wins[i].aggs
	copy(ks.wins[i:], ks.wins[i+1:])
	n := len(ks.wins) - 1
	ks.wins[n] = win{aggs: aggs}
	ks.wins = ks.wins[:n]
}

// release forgets a key that holds nothing any more.
func (w *Window) release(ks *keyState) {
	if ks.inTable {
		w.kbuf = append(append(w.kbuf[:0], 'k'), ks.key...)
		if err := w.table.Delete(w.kbuf); err != nil {
			w.log.Warn("window: state delete failed", "key", ks.key, "err", err)
		}
	}
	w.drop(ks)
}

// drop removes ks from memory and keeps the struct for reuse.
func (w *Window) drop(ks *keyState) {
	delete(w.keys, ks.key)
	w.mem -= ks.cost
	ks.cost, ks.dirty, ks.inTable, ks.key = 0, false, false, ""
	if len(w.free) < 256 {
		w.free = append(w.free, ks)
	}
}

// emit appends the window's results as a record. An early (not final)
// result gets its own ID, numbered, beside the window's.
func (w *Window) emit(ks *keyState, cw *win, final bool) {
	var id string
	if w.kind == counting {
		id = w.idPrefix + ks.key + ":#" + strconv.FormatInt(ks.seq, 10)
	} else {
		id = w.idPrefix + ks.key + ":" + strconv.FormatInt(cw.start, 10)
	}
	if !final {
		id += ":early" + strconv.FormatInt(cw.early, 10)
		cw.early++
	}
	fields := make([]agent.Field, 0, len(w.aggs)+3)
	fields = append(fields, agent.String("window_start", w.fmtCached(0, cw.start)), agent.String("window_end", w.fmtCached(1, cw.end)))
	for j := range w.aggs {
		if f, ok := cw.aggs[j].result(w.aggs[j].fn, w.aggs[j].name); ok {
			fields = append(fields, f)
		}
	}
	if w.every > 0 {
		fields = append(fields, agent.Bool("final", final))
	}
	w.out = append(w.out, agent.Record{ID: id, Key: ks.key, EventTime: cw.start, Fields: fields})
}

// emitEarly emits the current results of every open window in memory.
func (w *Window) emitEarly() {
	from := len(w.out)
	if w.earlyScan {
		w.loadOpen()
	}
	for _, ks := range w.keys {
		for i := range ks.wins {
			if ks.wins[i].n > 0 {
				w.emit(ks, &ks.wins[i], false)
			}
		}
		if len(ks.wins) > 0 {
			w.touch(ks)
		}
	}
	w.sortRecords(w.out[from:])
}

// loadOpen reads back the keys held only in the table (after a restart or a
// spill) that have open windows, so that early results cover them too; spill
// moves them out again if they do not fit the budget.
func (w *Window) loadOpen() {
	w.earlyScan = false
	var ks keyState
	var open []string
	err := w.table.Range(func(k, v []byte) bool {
		if len(k) == 0 || k[0] != 'k' {
			return true
		}
		if _, ok := w.keys[string(k[1:])]; ok {
			return true
		}
		if err := w.decodeKey(&ks, v); err != nil {
			return true // lookup logs it if the key comes back
		}
		if slices.ContainsFunc(ks.wins, func(cw win) bool { return cw.n > 0 }) {
			open = append(open, string(k[1:]))
		}
		return true
	})
	if err != nil {
		w.log.Warn("window: reading spilled state failed", "err", err)
		w.earlyScan = true
		return
	}
	for _, key := range open {
		w.lookup(key)
	}
}

// spill moves keys to the table while memory is over the budget.
func (w *Window) spill() {
	if w.mem <= w.budget {
		return
	}
	target := w.budget / 4 * 3
	for _, ks := range w.keys {
		if w.mem <= target {
			break
		}
		if len(ks.wins) == 0 && ks.seq == 0 {
			w.release(ks)
			continue
		}
		if ks.dirty || !ks.inTable {
			if err := w.writeKey(ks); err != nil {
				// The table refused it (a memory state store at its
				// budget): the key stays in memory, over the budget,
				// rather than be lost.
				if !w.spillRefused {
					w.spillRefused = true
					w.log.Warn("window: the state store refused spilled keys; they stay in memory, over memory_bytes, until it takes them", "err", err)
				}
				return
			}
			w.spillRefused = false
		}
		w.spillMin = min(w.spillMin, ks.minEnd)
		w.earlyScan = w.every > 0
		w.drop(ks)
	}
}

// fireSpilled emits the due windows of the keys held only in the table.
// It does not rewrite them: the table entries keep their emitted windows
// until the key is next read (decodeKey drops windows that end at or before
// firedUpTo), so firing a million spilled keys does not make a million dirty
// entries between two checkpoints. Entries left with nothing are deleted at
// most maxSweep per call, which bounds the dirty entries a fire adds while
// every stale entry is collected in the end. (A wall-clock TTL is not used:
// a board whose clock jumps from 1970 at its first NTP sync would lose state.)
func (w *Window) fireSpilled(wm int64) {
	newMin := int64(never)
	var ks keyState
	err := w.table.Range(func(k, v []byte) bool {
		if len(k) == 0 || k[0] != 'k' {
			return true
		}
		if _, ok := w.keys[string(k[1:])]; ok {
			return true // the version in memory is newer
		}
		if err := w.decodeKey(&ks, v); err != nil {
			w.log.Warn("window: state of key unreadable; skipped", "key", string(k[1:]), "err", err)
			return true
		}
		if ks.minEnd > wm {
			newMin = min(newMin, ks.minEnd)
			return true
		}
		ks.key = string(k[1:])
		left := 0
		for i := range ks.wins {
			if ks.wins[i].end <= wm {
				w.emit(&ks, &ks.wins[i], true)
			} else {
				newMin = min(newMin, ks.wins[i].end)
				left++
			}
		}
		if left == 0 && ks.seq == 0 && len(w.sweep) < maxSweep {
			w.sweep = append(w.sweep, append([]byte(nil), k...))
		}
		return true
	})
	if err != nil {
		w.log.Warn("window: reading spilled state failed", "err", err)
		return
	}
	w.spillMin = newMin
	for _, k := range w.sweep {
		if err := w.table.Delete(k); err != nil {
			w.log.Warn("window: state delete failed", "err", err)
		}
	}
	clear(w.sweep)
	w.sweep = w.sweep[:0]
}

// maxSweep bounds the stale spilled entries one fire deletes.
const maxSweep = 4096

// fmtCached formats t, reusing the last string of slot i: the windows of
// all keys close together and share their bounds.
func (w *Window) fmtCached(i int, t int64) string {
	if w.fmtT[i] != t || w.fmtS[i] == "" {
		w.fmtT[i], w.fmtS[i] = t, fmtTime(t)
	}
	return w.fmtS[i]
}

func floorTo(t, d int64) int64 {
	r := t % d
	if r < 0 {
		r += d
	}
	return t - r
}

func fmtTime(t int64) string {
	switch t {
	case math.MinInt64:
		return "-inf"
	case never:
		return "+inf"
	}
	return time.Unix(0, t).UTC().Format(time.RFC3339Nano)
}
