package window

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/operators/expr"
)

type kind uint8

const (
	tumbling kind = iota
	hopping
	session
	counting
)

type timeMode uint8

const (
	eventTime timeMode = iota
	receiveTime
	processingTime
)

const never = math.MaxInt64

type agg struct {
	fn    fn
	field string
	prog  *expr.Program
	name  string
}

// win is one open window of a key. For time windows it covers
// [start, end); a session's end is its last event plus the gap; a count
// window's start and end are the times of its first and last records.
type win struct {
	start, end int64
	n          int64
	early      int64 // early results emitted so far
	aggs       []aggState
}

// keyState is everything the operator holds for one key.
type keyState struct {
	key     string
	wins    []win
	minEnd  int64 // earliest end among wins (never: none); count windows never fire by time
	seq     int64 // count windows: windows completed so far, for their IDs
	dirty   bool  // changed since it was last written to the table
	inTable bool  // the table holds a version of it
	cost    int   // bytes charged against the memory budget
}

// Window is the window operator. It is not safe for concurrent use; the
// runner never calls it concurrently.
type Window struct {
	cfg      *Config
	kind     kind
	mode     timeMode
	size     int64
	step     int64
	gap      int64
	count    int64
	lateness int64
	every    int64 // early emission period, 0: none
	field    string
	unit     int64
	lateDead bool
	where    *expr.Program
	aggs     []agg

	component string
	idPrefix  string
	log       *slog.Logger
	late      *agent.Counter
	filtered  *agent.Counter
	failed    *agent.Counter

	table     agent.StateTable
	keys      map[string]*keyState
	free      []*keyState
	dirty     []*keyState // keys touched since the last snapshot; a dropped struct may be listed again once reused
	mem       int
	budget    int
	tableKeys bool     // the table may hold keys that are not in memory
	earlyScan bool     // with early results: the table may hold open windows of keys not in memory
	spillMin  int64    // earliest window end among keys held only in the table
	firedUpTo int64    // every window ending at or before it has been emitted
	sweep     [][]byte // spilled entries left with nothing, deleted after a Range
	// spillRefused: the table refused a spilled key (its WARN is logged)
	// and no spill has been taken since.
	spillRefused bool

	hasT     bool
	maxT     int64 // highest event time seen
	nextFire int64 // lower bound of the earliest window end in memory

	procStarted bool
	procStart   time.Time // monotonic origin of the processing clock
	procBase    int64     // processing clock at procStart (Unix ns)
	procStored  int64     // processing clock as of the last checkpoint
	procLast    int64     // processing clock at the last procNow
	lastEarly   int64

	out  []agent.Record
	idx  []int32
	tmp  []agent.Record
	fmtT [2]int64
	fmtS [2]string
	kbuf []byte
	vbuf []byte
}

// New returns the window operator for c, restoring its state from the
// table that env.State provides (a fresh in-memory table without one).
func New(c *Config, env agent.Env) (*Window, error) {
	env = env.WithDefaults()
	w := &Window{
		cfg:  c,
		size: int64(c.Size), step: int64(c.Step), gap: int64(c.Gap), count: int64(c.Count),
		lateness: int64(c.Lateness), every: int64(c.EmitEvery), field: c.TimeField, unit: unitNanos(c.TimeUnit),
		lateDead: c.Late != "count", component: env.Component,
		idPrefix: env.Pipeline + ":" + env.Component + ":",
		log:      env.Logger,
		late:     env.Counter("pspf_dropped_total", "reason", "late"),
		filtered: env.Counter("pspf_dropped_total", "reason", "filtered"),
		failed:   env.Counter("pspf_dropped_total", "reason", "expr_error"),
		keys:     map[string]*keyState{},
		budget:   int(c.MemoryBytes),
		spillMin: never, nextFire: never, firedUpTo: math.MinInt64,
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.budget <= 0 {
		w.budget = 16 << 20
	}
	switch c.Type {
	case "hopping":
		w.kind = hopping
	case "session":
		w.kind = session
	case "count":
		w.kind = counting
	default:
		w.kind = tumbling
		w.step = w.size
	}
	switch c.Time {
	case "receive":
		w.mode = receiveTime
	case "processing":
		w.mode = processingTime
	}
	if w.kind != hopping && w.kind != tumbling {
		w.step = 0
	}
	if (w.kind == tumbling || w.kind == hopping) && w.size <= 0 {
		return nil, errorf("size must be positive")
	}
	if w.kind == hopping && (w.step <= 0 || w.size%w.step != 0) {
		return nil, errorf("step must divide size")
	}
	if w.kind == session && w.gap <= 0 {
		return nil, errorf("gap must be positive")
	}
	if w.kind == counting && w.count <= 0 {
		return nil, errorf("count must be positive")
	}
	var err error
	if c.Where != "" {
		if w.where, err = expr.Compile(c.Where); err != nil {
			return nil, errorf("where: %w", err)
		}
	}
	for _, a := range c.Aggregates {
		f, ok := fnNames[a.Fn]
		if !ok {
			return nil, errorf("unknown aggregate %q", a.Fn)
		}
		g := agg{fn: f, field: a.Field, name: a.outName()}
		if a.Expr != "" {
			if g.prog, err = expr.Compile(a.Expr); err != nil {
				return nil, errorf("aggregate %s: %w", g.name, err)
			}
		}
		w.aggs = append(w.aggs, g)
	}
	if len(w.aggs) == 0 {
		return nil, errorf("no aggregates")
	}
	if w.table, err = agent.StateTableOf(env, 0); err != nil {
		return nil, errorf("state table: %w", err)
	}
	if err := w.restore(); err != nil {
		return nil, err
	}
	return w, nil
}

// Process adds the batch's records to their windows and replaces them by
// the results of the windows that closed.
func (w *Window) Process(_ context.Context, b *agent.Batch) error {
	w.out = w.out[:0]
	for i := range b.Records {
		r := &b.Records[i]
		if w.where != nil {
			ok, err := w.where.EvalBool(r)
			if err != nil {
				w.failed.Inc()
				b.Reject(*r, w.component, errorf("where: %w", err))
				continue
			}
			if !ok {
				w.filtered.Inc()
				continue
			}
		}
		t, ok := w.timeOf(r, b.Now)
		if !ok {
			b.Reject(*r, w.component, errorf("record has no event time (field %q)", w.field))
			continue
		}
		if w.mode != processingTime && (!w.hasT || t > w.maxT) {
			w.maxT, w.hasT = t, true
		}
		if !w.add(r, t) {
			w.late.Inc()
			if w.lateDead {
				b.Reject(*r, w.component, errorf("late event: %s is behind the watermark %s", fmtTime(t), fmtTime(w.watermark())))
			}
		}
	}
	w.fire(w.watermarkAt(b.Now))
	b.Records = append(b.Records[:0], w.out...)
	w.out = w.out[:0]
	w.spill()
	return nil
}

// OnTimer fires processing-time windows and emits early results.
func (w *Window) OnTimer(_ context.Context, b *agent.Batch) error {
	w.out = w.out[:0]
	if w.mode == processingTime {
		w.fire(w.procNow(b.Now))
	}
	if w.every > 0 {
		p := w.procNow(b.Now)
		if p-w.lastEarly >= w.every {
			w.lastEarly = p
			w.emitEarly()
			w.spill() // keys emitEarly read back from the table
		}
	}
	b.Records = append(b.Records, w.out...)
	w.out = w.out[:0]
	return nil
}

// EndOfInput closes every open time window, as if the watermark had passed
// them all (the deterministic runner's end of input).
func (w *Window) EndOfInput(_ context.Context, b *agent.Batch) error {
	w.out = w.out[:0]
	w.fire(never - 1)
	b.Records = append(b.Records, w.out...)
	w.out = w.out[:0]
	return nil
}

func (w *Window) watermark() int64 {
	if !w.hasT {
		return math.MinInt64
	}
	return w.maxT - w.lateness
}

func (w *Window) watermarkAt(now time.Time) int64 {
	if w.mode == processingTime {
		return w.procNow(now)
	}
	return w.watermark()
}

// procNow is the processing clock: the wall clock when the operator first
// ran (or the clock of the last checkpoint, if that is later: a board whose
// clock was set back at boot does not freeze its windows), advanced by the
// monotonic time since.
func (w *Window) procNow(now time.Time) int64 {
	if !w.procStarted {
		w.procStarted = true
		w.procStart = now
		w.procBase = max(now.UnixNano(), w.procStored)
		if w.lastEarly == 0 {
			w.lastEarly = w.procBase
		}
	}
	w.procLast = w.procBase + int64(now.Sub(w.procStart))
	return w.procLast
}

func (w *Window) timeOf(r *agent.Record, now time.Time) (int64, bool) {
	switch w.mode {
	case processingTime:
		return w.procNow(now), true
	case receiveTime:
		return r.RecvTime, r.RecvTime != 0
	}
	if w.field != "" {
		f := r.Field(w.field)
		if f == nil {
			return 0, false
		}
		if f.Kind == agent.KindInt {
			return f.Int * w.unit, true
		}
		v, ok := f.AsFloat()
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, false
		}
		return int64(v * float64(w.unit)), true
	}
	if r.EventTime != 0 {
		return r.EventTime, true
	}
	return r.RecvTime, r.RecvTime != 0
}

// lookup returns the key's state, loading it from the table or making it.
func (w *Window) lookup(key string) *keyState {
	if ks := w.keys[key]; ks != nil {
		return ks
	}
	var ks *keyState
	if n := len(w.free); n > 0 {
		ks = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		ks = &keyState{}
	}
	ks.key, ks.wins, ks.minEnd, ks.seq, ks.dirty, ks.inTable = key, ks.wins[:0], never, 0, false, false
	if w.tableKeys {
		w.kbuf = append(append(w.kbuf[:0], 'k'), key...)
		v, ok, err := w.table.Get(w.kbuf, w.vbuf[:0])
		w.vbuf = v
		if err != nil {
			w.log.Warn("window: state read failed; key starts empty", "key", key, "err", err)
		} else if ok {
			if err := w.decodeKey(ks, v); err != nil {
				w.log.Warn("window: state of key unreadable; key starts empty", "key", key, "err", err)
				ks.wins = ks.wins[:0]
			}
			ks.inTable = true
			w.nextFire = min(w.nextFire, ks.minEnd)
		}
	}
	w.keys[key] = ks
	w.recost(ks)
	return ks
}

func (w *Window) touch(ks *keyState) {
	if !ks.dirty {
		ks.dirty = true
		w.dirty = append(w.dirty, ks)
	}
}

func (w *Window) recost(ks *keyState) {
	c := 160 + len(ks.key)
	all := ks.wins[:cap(ks.wins)]
	for i := range all {
		c += 64
		for j := range all[i].aggs[:cap(all[i].aggs)] {
			c += all[i].aggs[:cap(all[i].aggs)][j].bytes()
		}
	}
	w.mem += c - ks.cost
	ks.cost = c
}

// add puts r (at time t) into its windows; false means it is late.
func (w *Window) add(r *agent.Record, t int64) bool {
	wm := w.watermark()
	if w.mode == processingTime {
		wm = math.MinInt64
	}
	switch w.kind {
	case tumbling, hopping:
		last := floorTo(t, w.step) // the latest window holding t
		if last+w.size <= wm {
			return false // it is closed, and so are the earlier ones
		}
		ks := w.lookup(r.Key)
		for s := last; s > t-w.size; s -= w.step {
			if s+w.size <= wm {
				break
			}
			w.into(ks, w.window(ks, s, s+w.size), r, t)
		}
		w.touch(ks)
	case session:
		return w.addSession(r, t, wm)
	case counting:
		ks := w.lookup(r.Key)
		if len(ks.wins) == 0 {
			w.openAt(ks, 0, t, t)
		}
		cw := &ks.wins[0]
		if t < cw.start {
			cw.start = t
		}
		cw.end = max(cw.end, t)
		w.into(ks, cw, r, t)
		if cw.n >= w.count {
			w.emit(ks, cw, true)
			ks.seq++
			w.closeWin(ks, 0)
		}
		w.touch(ks)
	}
	return true
}

// window returns the key's window starting at s, opening it if needed
// (windows stay sorted by start).
func (w *Window) window(ks *keyState, s, e int64) *win {
	i := 0
	for ; i < len(ks.wins); i++ {
		if ks.wins[i].start == s {
			return &ks.wins[i]
		}
		if ks.wins[i].start > s {
			break
		}
	}
	return w.openAt(ks, i, s, e)
}

// openAt inserts a new, empty window at index i, reusing the capacity of
// the key's slices.
func (w *Window) openAt(ks *keyState, i int, s, e int64) *win {
	grew := len(ks.wins) == cap(ks.wins)
	ks.wins = append(ks.wins, win{})
	last := ks.wins[len(ks.wins)-1] // the spare slot, with its aggs buffer
	copy(ks.wins[i+1:], ks.wins[i:len(ks.wins)-1])
	nw := &ks.wins[i]
	*nw = win{start: s, end: e, aggs: last.aggs}
	if cap(nw.aggs) < len(w.aggs) {
		nw.aggs = make([]aggState, len(w.aggs))
		grew = true
	}
	nw.aggs = nw.aggs[:len(w.aggs)]
	for j := range nw.aggs {
		nw.aggs[j].reset()
	}
	if w.kind != counting {
		ks.minEnd = min(ks.minEnd, e)
		w.nextFire = min(w.nextFire, e)
	}
	if grew {
		w.recost(ks)
	}
	return nw
}

// into adds r's values to the window's aggregates.
func (w *Window) into(_ *keyState, cw *win, r *agent.Record, t int64) {
	cw.n++
	for j := range w.aggs {
		a := &w.aggs[j]
		if a.fn == fnCount && a.field == "" && a.prog == nil {
			cw.aggs[j].n++
			continue
		}
		var v float64
		if a.prog != nil {
			val, err := a.prog.Eval(r)
			if err != nil {
				continue
			}
			f := val.Field("")
			x, ok := f.AsFloat()
			if !ok {
				continue
			}
			v = x
		} else {
			f := r.Field(a.field)
			if f == nil {
				continue
			}
			x, ok := f.AsFloat()
			if !ok {
				continue
			}
			v = x
		}
		cw.aggs[j].add(a.fn, v, t)
	}
}

func (w *Window) addSession(r *agent.Record, t, wm int64) bool {
	ks := w.lookup(r.Key)
	target := -1
	for i := 0; i < len(ks.wins); i++ {
		s := &ks.wins[i]
		if s.end <= wm || t <= s.start-w.gap || t >= s.end {
			continue
		}
		if target < 0 {
			target = i
			continue
		}
		// t joins two sessions: fold the later one into the first.
		tg := &ks.wins[target]
		for j := range tg.aggs {
			tg.aggs[j].merge(&s.aggs[j])
		}
		tg.n += s.n
		tg.start = min(tg.start, s.start)
		tg.end = max(tg.end, s.end)
		w.closeWin(ks, i)
		i--
	}
	if target < 0 {
		if t+w.gap <= wm {
			if len(ks.wins) == 0 && !ks.dirty && ks.seq == 0 {
				w.release(ks)
			}
			return false
		}
		i := 0
		for i < len(ks.wins) && ks.wins[i].start < t {
			i++
		}
		target = i
		w.openAt(ks, i, t, t+w.gap)
	}
	tg := &ks.wins[target]
	tg.start = min(tg.start, t)
	tg.end = max(tg.end, t+w.gap)
	w.into(ks, tg, r, t)
	w.touch(ks)
	ks.minEnd = never
	for i := range ks.wins {
		ks.minEnd = min(ks.minEnd, ks.wins[i].end)
	}
	return true
}
