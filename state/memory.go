package state

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Memory is a Store that keeps the state in RAM only, for tests and for
// pipelines whose state is cheap to lose: nothing is ever written to a
// file. A new Memory is empty and has no checkpoint; the state lives as
// long as the Memory does.
//
// Its budget (Options.CacheBytes, default DefaultCacheBytes) is charged
// exactly as DB charges its cache, so the state that fits one fits the
// other. It is a hard bound: with no file to evict to, a Put that would
// take the store over it first removes the keys whose TTL has passed, then
// fails with ErrFull, leaving the key as it was; the first refusal of an
// episode logs one WARN, Stats.Refused counts them, and the episode ends
// (one INFO) once deletes or expiries bring the state under three
// quarters of the budget.
//
// A checkpoint writes nothing: Commit records the metadata as the last
// checkpoint (LastCheckpoint returns it while the Memory is open), removes
// the keys whose TTL had passed at Prepare and the dropped tables, and
// returns at once with CheckpointStats.BytesWritten 0. Pressure is never
// signalled and Damaged is always nil.
//
// Range copies the table's keys (their string headers, 16 bytes a key),
// sorts them, and then copies the values of 256 keys at a time: its
// transient memory is about a tenth of the table's charge.
type Memory struct {
	log    *slog.Logger
	budget int64
	clock  stateClock

	ckpt     chan struct{} // one-slot semaphore held from Prepare to Commit or Abort, and by Close
	pressure chan struct{} // never signalled

	mu      sync.Mutex
	closed  bool
	tables  map[string]*memTable
	drops   map[string]bool // dropped names: true once a pending checkpoint holds the drop
	used    int64           // charge of all entries
	entries int
	changes int // Puts and Deletes since the last Prepare
	hits    uint64
	refused uint64
	full    bool   // in a refusal episode: its WARN was logged
	episode uint64 // refused when the episode began
	last    CheckpointInfo
}

// memTable is the Table of a Memory.
type memTable struct {
	s       *Memory
	name    string
	ttl     int64 // nanoseconds; 0: keys never expire
	m       map[string]*memEntry
	order   memEntry // sentinel of the entries in write order (tables with a TTL)
	dropped bool
}

// memEntry is one key of a memTable.
type memEntry struct {
	key        string
	val        []byte
	wt         int64     // write time on the state clock (tables with a TTL)
	prev, next *memEntry // write order, oldest first; nil without a TTL
}

// charge is what the entry costs against the budget: what DB charges for
// the same key and value (its stored value carries the write time and
// checksum, hdr).
func (e *memEntry) charge() int64 {
	return EntryOverhead + int64(len(e.key)) + hdr + int64(cap(e.val))
}

// NewMemory returns an empty Memory store. Of opts it uses CacheBytes (the
// budget), Logger and Now. It starts no goroutines.
func NewMemory(opts Options) (*Memory, error) {
	if opts.CacheBytes < 0 {
		return nil, fmt.Errorf("state: memory store: cache bytes must be >= 0, got %d", opts.CacheBytes)
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Memory{
		log:      log,
		budget:   opts.CacheBytes,
		clock:    newStateClock(opts.Now),
		ckpt:     make(chan struct{}, 1),
		pressure: make(chan struct{}, 1),
		tables:   make(map[string]*memTable),
		drops:    make(map[string]bool),
		last:     CheckpointInfo{Meta: map[string][]byte{}},
	}, nil
}

// Table returns the table called name, creating it if needed; see Store.
func (s *Memory) Table(name string, ttl time.Duration) (Table, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if ttl < 0 {
		return nil, fmt.Errorf("state: table %q: ttl must be >= 0, got %s", name, ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if _, ok := s.drops[name]; ok {
		return nil, fmt.Errorf("state: table %q: until the next checkpoint commits: %w", name, ErrTableDropped)
	}
	if t, ok := s.tables[name]; ok {
		if t.ttl != ttlNanos(ttl) {
			return nil, fmt.Errorf("state: table %q has ttl %s, got %s: %w", name, time.Duration(t.ttl), ttl, ErrTableTTL)
		}
		return t, nil
	}
	t := &memTable{s: s, name: name, ttl: ttlNanos(ttl), m: make(map[string]*memEntry)}
	t.order.next, t.order.prev = &t.order, &t.order
	s.tables[name] = t
	return t, nil
}

// Tables returns the names of the open tables, sorted, without the
// dropped ones.
func (s *Memory) Tables() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := make([]string, 0, len(s.tables))
	for name := range s.tables {
		out = append(out, name)
	}
	slices.Sort(out)
	return out, nil
}

// DropTable deletes the table called name and frees its entries at once;
// see Store.
func (s *Memory) DropTable(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if t := s.tables[name]; t != nil {
		t.dropped = true
		delete(s.tables, name)
		for _, e := range t.m {
			s.used -= e.charge()
			s.entries--
		}
		t.m = nil
		t.order.next, t.order.prev = &t.order, &t.order
		s.room()
	}
	if _, ok := s.drops[name]; !ok {
		s.drops[name] = false
	}
	return nil
}

// LastCheckpoint returns the last checkpoint this Memory committed; Seq is
// 0 when there has been none (always, for a new Memory).
func (s *Memory) LastCheckpoint() (CheckpointInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return CheckpointInfo{}, ErrClosed
	}
	info := s.last
	info.Meta = make(map[string][]byte, len(s.last.Meta))
	for k, v := range s.last.Meta {
		info.Meta[k] = append([]byte(nil), v...)
	}
	return info, nil
}

// Pressure returns a channel that is never signalled: a checkpoint frees
// no memory of a Memory beyond the expired keys, which Put removes itself
// when it needs the room.
func (s *Memory) Pressure() <-chan struct{} { return s.pressure }

// Damaged returns nil: memory is not damaged the way a file is.
func (s *Memory) Damaged() error { return nil }

// Handover closes s and returns a new Memory holding its state, its last
// checkpoint, its state clock and its counters, for the next user of the
// state (the runner's next generation of the pipeline). Calls on s and on
// its tables return ErrClosed from then on, so that a late call of the old
// user cannot change what the new one holds. It waits for a Pending to
// end. When the state changed after the last committed checkpoint, or none
// was committed, it only closes s and returns nil: that state is not the
// one of any checkpoint, and the next user would apply the records after
// the checkpoint a second time.
func (s *Memory) Handover() *Memory {
	s.ckpt <- struct{}{}
	defer func() { <-s.ckpt }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	var next *Memory
	if s.last.Seq > 0 && s.changes == 0 && len(s.drops) == 0 {
		next = &Memory{
			log: s.log, budget: s.budget, clock: s.clock,
			ckpt: make(chan struct{}, 1), pressure: make(chan struct{}, 1),
			tables: make(map[string]*memTable, len(s.tables)), drops: make(map[string]bool),
			used: s.used, entries: s.entries, hits: s.hits, refused: s.refused,
			full: s.full, episode: s.episode, last: s.last,
		}
		for name, t := range s.tables {
			nt := &memTable{s: next, name: name, ttl: t.ttl, m: t.m}
			nt.order.next, nt.order.prev = &nt.order, &nt.order
			if t.order.next != &t.order {
				nt.order.next, nt.order.prev = t.order.next, t.order.prev
				nt.order.next.prev, nt.order.prev.next = &nt.order, &nt.order
			}
			next.tables[name] = nt
		}
	}
	s.closed = true
	for _, t := range s.tables {
		t.dropped, t.m = true, nil
		t.order.next, t.order.prev = &t.order, &t.order
	}
	s.tables = nil
	s.used, s.entries, s.changes = 0, 0, 0
	return next
}

// Stats returns the store's counters. It works after Close.
func (s *Memory) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Budget: s.budget, CacheBytes: s.used, Entries: s.entries,
		DirtyEntries: s.changes, Hits: s.hits, Refused: s.refused,
	}
}

// Close drops the state; it waits for a Pending to end. Close is
// idempotent; every other method returns ErrClosed after it (Stats and
// Damaged still work).
func (s *Memory) Close() error {
	s.ckpt <- struct{}{}
	defer func() { <-s.ckpt }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, t := range s.tables {
		t.dropped, t.m = true, nil // a handle kept by someone fails with ErrClosed
		t.order.next, t.order.prev = &t.order, &t.order
	}
	s.tables = nil
	s.used, s.entries, s.changes = 0, 0, 0
	return nil
}

// purge removes the entries of every TTL table written at or before
// cutoff on the state clock and returns how many. Requires s.mu.
func (s *Memory) purge(cutoffFor func(t *memTable) int64) int {
	n := 0
	for _, t := range s.tables {
		if t.ttl == 0 {
			continue
		}
		cutoff := cutoffFor(t)
		for e := t.order.next; e != &t.order && e.wt <= cutoff; e = t.order.next {
			t.remove(e)
			n++
		}
	}
	if n > 0 {
		s.room()
	}
	return n
}

// expiredBy returns the cutoff of the TTL tables at the state clock now.
func expiredBy(now int64) func(t *memTable) int64 {
	return func(t *memTable) int64 { return now - t.ttl }
}

// room ends a refusal episode once the state is under three quarters of
// the budget. Requires s.mu.
func (s *Memory) room() {
	if s.full && s.used <= s.budget/4*3 {
		s.full = false
		s.log.Info("state: memory store has room again", "bytes", s.used, "budget", s.budget, "refused", s.refused-s.episode)
	}
}

// usable returns ErrClosed or ErrTableDropped, or nil. Requires s.mu.
func (t *memTable) usable() error {
	switch {
	case t.s.closed:
		return ErrClosed
	case t.dropped:
		return fmt.Errorf("state: table %q: %w", t.name, ErrTableDropped)
	}
	return nil
}

func (t *memTable) checkKey(op string, key []byte) error {
	if len(key) == 0 || len(key) > MaxKeySize {
		return fmt.Errorf("state: table %q: %s: key is %d bytes, want 1 to %d: %w", t.name, op, len(key), MaxKeySize, ErrKeySize)
	}
	return nil
}

// expired reports whether e has outlived the table's TTL at now.
func (t *memTable) expired(e *memEntry, now int64) bool {
	return t.ttl > 0 && e.wt <= now-t.ttl
}

// remove deletes e from the table. Requires s.mu.
func (t *memTable) remove(e *memEntry) {
	delete(t.m, e.key)
	if e.next != nil {
		e.prev.next, e.next.prev = e.next, e.prev
		e.prev, e.next = nil, nil
	}
	t.s.used -= e.charge()
	t.s.entries--
}

// Name returns the table's name.
func (t *memTable) Name() string { return t.name }

// TTL returns the table's TTL (0: none).
func (t *memTable) TTL() time.Duration { return time.Duration(t.ttl) }

// Get appends the value of key to dst; see Table. It does not allocate
// when dst has room. An expired key it meets is removed.
func (t *memTable) Get(key, dst []byte) ([]byte, bool, error) {
	if err := t.checkKey("get", key); err != nil {
		return dst, false, err
	}
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := t.usable(); err != nil {
		return dst, false, err
	}
	s.hits++
	e := t.m[string(key)]
	if e == nil {
		return dst, false, nil
	}
	if t.ttl > 0 && t.expired(e, s.clock.nanos()) {
		t.remove(e)
		s.room()
		return dst, false, nil
	}
	return append(dst, e.val...), true, nil
}

// Put sets key to a copy of val; see Table. Over the budget it fails with
// ErrFull (see Memory). It does not allocate when the key exists and its
// buffer has room.
func (t *memTable) Put(key, val []byte) error {
	if err := t.checkKey("put", key); err != nil {
		return err
	}
	if len(val) > MaxValueSize {
		return fmt.Errorf("state: table %q: put %s: value is %d bytes, limit %d: %w", t.name, showKey(key), len(val), MaxValueSize, ErrValueSize)
	}
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	e, reuse := t.fit(key, len(val))
	if d := t.growth(e, key, len(val), reuse); d > 0 && s.used+d > s.budget {
		if s.purge(expiredBy(s.clock.nanos())) > 0 {
			e, reuse = t.fit(key, len(val))
		}
		if d := t.growth(e, key, len(val), reuse); d > 0 && s.used+d > s.budget {
			return s.refuse(t, key, len(val))
		}
	}
	if e == nil {
		e = &memEntry{key: string(key)}
		t.m[e.key] = e
		s.entries++
		s.used += e.charge()
	}
	old := e.charge()
	if reuse {
		e.val = e.val[:len(val)]
	} else {
		e.val = make([]byte, len(val))
	}
	copy(e.val, val)
	s.used += e.charge() - old
	if t.ttl > 0 { // the write time, and to the back of the write order
		e.wt = s.clock.nanos()
		if e.next != nil {
			e.prev.next, e.next.prev = e.next, e.prev
		}
		e.prev, e.next = t.order.prev, &t.order
		e.prev.next, t.order.prev = e, e
	}
	s.changes++
	return nil
}

// fit returns key's live entry, if any, and whether its value buffer can
// take n bytes (reused when it is neither too small nor much too large, as
// DB does). Requires s.mu.
func (t *memTable) fit(key []byte, n int) (*memEntry, bool) {
	e := t.m[string(key)]
	if e == nil {
		return nil, false
	}
	return e, cap(e.val) >= n && hdr+cap(e.val) <= 2*(hdr+n)+64
}

// growth returns how much a Put of n bytes to key (entry e, nil for a new
// key) would add to the charge.
func (t *memTable) growth(e *memEntry, key []byte, n int, reuse bool) int64 {
	next := EntryOverhead + int64(len(key)) + hdr + int64(n)
	switch {
	case e == nil:
		return next
	case reuse:
		return 0
	}
	return next - e.charge()
}

// refuse counts a Put refused for the budget and returns its error; the
// first refusal of an episode logs a WARN. Requires s.mu.
func (s *Memory) refuse(t *memTable, key []byte, n int) error {
	s.refused++
	if !s.full {
		s.full, s.episode = true, s.refused-1
		s.log.Warn("state: memory store full: writes of new state are refused until keys are deleted or expire",
			"table", t.name, "bytes", s.used, "budget", s.budget, "value_bytes", n)
	}
	return fmt.Errorf("state: table %q: put %s: %d bytes of state, budget %d: %w", t.name, showKey(key), s.used, s.budget, ErrFull)
}

// Delete removes key; see Table.
func (t *memTable) Delete(key []byte) error {
	if err := t.checkKey("delete", key); err != nil {
		return err
	}
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	e := t.m[string(key)]
	if e == nil {
		return nil
	}
	if !t.expired(e, s.clock.nanos()) {
		s.changes++
	}
	t.remove(e)
	s.room()
	return nil
}

// Range calls fn for every live key in byte order; see Table and Memory.
func (t *memTable) Range(fn func(k, v []byte) bool) error {
	s := t.s
	s.mu.Lock()
	if err := t.usable(); err != nil {
		s.mu.Unlock()
		return err
	}
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	slices.Sort(keys)
	var arena []byte
	var spans []int // per live key of the chunk: end of its key, end of its value in arena
	for len(keys) > 0 {
		chunk := keys[:min(rangeChunk, len(keys))]
		keys = keys[len(chunk):]
		arena, spans = arena[:0], spans[:0]
		s.mu.Lock()
		if err := t.usable(); err != nil {
			s.mu.Unlock()
			return err
		}
		now := s.clock.nanos()
		for _, k := range chunk {
			e := t.m[k]
			if e == nil || t.expired(e, now) {
				continue
			}
			arena = append(arena, k...)
			spans = append(spans, len(arena))
			arena = append(arena, e.val...)
			spans = append(spans, len(arena))
		}
		s.mu.Unlock()
		start := 0
		for i := 0; i < len(spans); i += 2 {
			kEnd, vEnd := spans[i], spans[i+1]
			if !fn(arena[start:kEnd:kEnd], arena[kEnd:vEnd:vEnd]) {
				return nil
			}
			start = vEnd
		}
	}
	return nil
}

// Len returns the number of live keys in the table; it removes the
// expired ones first.
func (t *memTable) Len() (int, error) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := t.usable(); err != nil {
		return 0, err
	}
	if t.ttl > 0 {
		cutoff := s.clock.nanos() - t.ttl
		for e := t.order.next; e != &t.order && e.wt <= cutoff; e = t.order.next {
			t.remove(e)
		}
		s.room()
	}
	return len(t.m), nil
}

// memPending is the Pending of a Memory.
type memPending struct {
	s       *Memory
	meta    map[string][]byte
	seq     uint64
	now     int64
	changes int
	drops   []string
	prepDur time.Duration
	done    bool
}

// Prepare captures a checkpoint; see Store. It copies meta and nothing
// else.
func (s *Memory) Prepare(meta map[string][]byte) (Pending, error) {
	mcopy, err := copyMeta(meta)
	if err != nil {
		return nil, err
	}
	s.ckpt <- struct{}{}
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		<-s.ckpt
		return nil, ErrClosed
	}
	p := &memPending{s: s, meta: mcopy, seq: s.last.Seq + 1, now: s.clock.nanos(), changes: s.changes}
	s.changes = 0
	for name, held := range s.drops {
		if !held {
			s.drops[name] = true
			p.drops = append(p.drops, name)
		}
	}
	p.prepDur = time.Since(start)
	return p, nil
}

// Checkpoint is Prepare followed by Commit.
func (s *Memory) Checkpoint(meta map[string][]byte) (CheckpointStats, error) {
	p, err := s.Prepare(meta)
	if err != nil {
		return CheckpointStats{}, err
	}
	return p.Commit()
}

// Entries returns the number of Puts, Deletes and drops since the last
// checkpoint (a key written twice counts twice).
func (p *memPending) Entries() int { return p.changes + len(p.drops) }

// Abort drops the prepared checkpoint: its changes count for the next one.
func (p *memPending) Abort() {
	if p.done {
		return
	}
	p.done = true
	s := p.s
	s.mu.Lock()
	s.changes += p.changes
	for _, name := range p.drops {
		s.drops[name] = false
	}
	s.mu.Unlock()
	<-s.ckpt
}

// Commit records the checkpoint as the last one and removes the keys whose
// TTL had passed at Prepare and the dropped tables' names; it writes
// nothing and cannot fail, except when called twice.
func (p *memPending) Commit() (CheckpointStats, error) {
	if p.done {
		return CheckpointStats{}, fmt.Errorf("state: checkpoint %d: already ended", p.seq)
	}
	p.done = true
	s := p.s
	defer func() { <-s.ckpt }()
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := CheckpointStats{Seq: p.seq, Time: time.Unix(0, p.now), Prepare: p.prepDur}
	st.Expired = s.purge(expiredBy(p.now))
	for _, name := range p.drops {
		delete(s.drops, name)
	}
	s.last = CheckpointInfo{Seq: p.seq, Time: st.Time, Meta: p.meta}
	st.Commit = time.Since(start)
	return st, nil
}
