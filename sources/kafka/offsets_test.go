package kafka

import "testing"

// TestPartStateDurable checks what may be committed as acks come: only
// the prefix of spans that are all acked, whatever the order of the acks;
// a nacked span stops it for good (the records are read again after the
// client restarts); a gone partition's acks move nothing.
func TestPartStateDurable(t *testing.T) {
	type step struct {
		span   int  // index of the span acked
		nacked bool // acked with an error
	}
	for _, tc := range []struct {
		name    string
		ends    []int64 // the spans' end offsets, in order
		acks    []step
		durable int64
		waiting bool
	}{
		{"in order", []int64{10, 20, 30}, []step{{0, false}, {1, false}, {2, false}}, 30, false},
		{"a later batch first", []int64{10, 20, 30}, []step{{1, false}, {2, false}}, -1, true},
		{"the gap filled", []int64{10, 20, 30}, []step{{1, false}, {2, false}, {0, false}}, 30, false},
		{"a prefix", []int64{10, 20, 30}, []step{{0, false}, {2, false}}, 10, true},
		{"nacked first", []int64{10, 20, 30}, []step{{0, true}, {1, false}, {2, false}}, -1, false},
		{"nacked in the middle", []int64{10, 20, 30}, []step{{0, false}, {1, true}, {2, false}}, 10, false},
		{"nacked after later acks", []int64{10, 20, 30}, []step{{2, false}, {0, false}, {1, true}}, 10, false},
		{"nothing acked", []int64{10}, nil, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := newPartState(tp{"t", 0}, -1)
			spans := make([]*span, len(tc.ends))
			for i, end := range tc.ends {
				spans[i] = &span{ps: ps, end: end, epoch: 3}
				ps.add(spans[i])
			}
			for _, a := range tc.acks {
				spans[a.span].done, spans[a.span].nacked = true, a.nacked
				ps.advance()
			}
			if ps.durable != tc.durable {
				t.Errorf("got durable %d, want %d", ps.durable, tc.durable)
			}
			if ps.waiting() != tc.waiting {
				t.Errorf("got waiting %v, want %v", ps.waiting(), tc.waiting)
			}
			off, ok := ps.toCommit()
			if ok != (tc.durable >= 0) || (ok && off != tc.durable) {
				t.Errorf("got toCommit %d %v, want %d %v", off, ok, tc.durable, tc.durable >= 0)
			}
			if tc.durable >= 0 && ps.epoch != 3 {
				t.Errorf("got epoch %d, want the span's 3", ps.epoch)
			}
		})
	}
}

// TestPartStateCommitted checks that an offset already committed is not
// committed again, and that a later durable offset is.
func TestPartStateCommitted(t *testing.T) {
	ps := newPartState(tp{"t", 0}, 10)
	if _, ok := ps.toCommit(); ok {
		t.Error("got something to commit before any ack")
	}
	sp := &span{ps: ps, end: 10}
	ps.add(sp)
	sp.done = true
	ps.advance()
	if _, ok := ps.toCommit(); ok {
		t.Error("got the committed offset to commit again")
	}
	sp = &span{ps: ps, end: 15}
	ps.add(sp)
	sp.done = true
	ps.advance()
	if off, ok := ps.toCommit(); !ok || off != 15 {
		t.Errorf("got %d %v, want 15 true", off, ok)
	}
}
