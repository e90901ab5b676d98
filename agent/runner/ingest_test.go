package runner

import (
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// TestPresize checks that the reused field storage gives every record its
// own room: filling one record's fields never reaches the next record's, and
// the fields a record came with are kept in order.
func TestPresize(t *testing.T) {
	s := &sourceRun{}
	recs := []agent.Record{{Fields: []agent.Field{agent.String("device", "a")}}, {Fields: []agent.Field{agent.String("device", "b")}}}
	if used := s.presize(recs); used != 0 {
		t.Fatalf("first batch: got %d fields in use, want 0 (nothing learnt yet)", used)
	}
	s.perRecord = 3
	if used := s.presize(recs); used != 2*5 {
		t.Fatalf("got %d fields in use, want %d", used, 2*5)
	}
	for i := range recs {
		if got := cap(recs[i].Fields); got != 5 {
			t.Errorf("record %d: got capacity %d, want 5", i, got)
		}
	}
	for j := range 6 { // one more than the room: the last append must move the record's fields out
		recs[0].Fields = append(recs[0].Fields, agent.Int("n", int64(j)))
	}
	if got := recs[1].Fields; len(got) != 1 || got[0].Str != "b" {
		t.Errorf("record 1: got fields %+v, want only device b", got)
	}
	if got := recs[0].Fields; len(got) != 7 || got[0].Str != "a" || got[6].Int != 5 {
		t.Errorf("record 0: got fields %+v, want device a and n 0..5", got)
	}
	big := make([]agent.Record, maxPresized)
	if used := s.presize(big); used != 0 {
		t.Errorf("oversized batch: got %d fields in use, want 0", used)
	}
}
