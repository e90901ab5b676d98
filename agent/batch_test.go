package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// batchOf returns a batch of n records with IDs "0", "1"... and one field
// each, v, equal to the index.
func batchOf(n int) *Batch {
	b := &Batch{}
	for i := range n {
		b.Records = append(b.Records, Record{ID: fmt.Sprint(i), Fields: []Field{Int("v", int64(i))}})
	}
	return b
}

func ids(rs []Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func TestBatchKeep(t *testing.T) {
	errOdd := errors.New("odd")
	errTable := errors.New("table")
	for _, tc := range []struct {
		name         string
		fail         bool // KeepOrFail, not Keep
		verdict      func(v int64) (bool, error)
		kept, dead   []string
		dropped, rej int
		err          error
	}{
		{name: "all kept", verdict: func(int64) (bool, error) { return true, nil },
			kept: []string{"0", "1", "2", "3", "4", "5"}},
		{name: "all dropped", verdict: func(int64) (bool, error) { return false, nil },
			kept: []string{}, dropped: 6},
		{name: "evens kept, odds dropped", verdict: func(v int64) (bool, error) { return v%2 == 0, nil },
			kept: []string{"0", "2", "4"}, dropped: 3},
		{name: "odds rejected", verdict: func(v int64) (bool, error) {
			if v%2 == 1 {
				return false, errOdd
			}
			return true, nil
		}, kept: []string{"0", "2", "4"}, dead: []string{"1", "3", "5"}, rej: 3},
		{name: "mixed", verdict: func(v int64) (bool, error) {
			switch v % 3 {
			case 0:
				return true, nil
			case 1:
				return false, nil
			}
			return true, errOdd // an error rejects whatever the bool says
		}, kept: []string{"0", "3"}, dead: []string{"2", "5"}, dropped: 2, rej: 2},
		// KeepOrFail: an error stops the loop; the records not looked at
		// yet stay, the one that failed among them.
		{name: "fail", fail: true, verdict: func(v int64) (bool, error) {
			switch {
			case v == 3:
				return false, errTable
			case v == 1:
				return false, nil
			}
			return true, nil
		}, kept: []string{"0", "2", "3", "4", "5"}, dropped: 1, err: errTable},
		{name: "fail, none", fail: true, verdict: func(v int64) (bool, error) { return v%2 == 0, nil },
			kept: []string{"0", "2", "4"}, dropped: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := batchOf(6)
			verdict := func(r *Record) (bool, error) { return tc.verdict(r.Fields[0].Int) }
			var dropped, rejected int
			var err error
			if tc.fail {
				dropped, err = b.KeepOrFail(verdict)
			} else {
				dropped, rejected = b.Keep("operators[0].x", verdict)
			}
			if err != tc.err {
				t.Fatalf("got error %v, want %v", err, tc.err)
			}
			if got := ids(b.Records); !slices.Equal(got, tc.kept) {
				t.Errorf("got records %v, want %v", got, tc.kept)
			}
			if got := ids(deadRecords(b.Dead)); !slices.Equal(got, tc.dead) {
				t.Errorf("got dead %v, want %v", got, tc.dead)
			}
			for _, d := range b.Dead {
				if d.Component != "operators[0].x" || !errors.Is(d.Err, errOdd) {
					t.Errorf("got dead %q from %q with %v, want operators[0].x and %v", d.Record.ID, d.Component, d.Err, errOdd)
				}
			}
			if dropped != tc.dropped || rejected != tc.rej {
				t.Errorf("got %d dropped, %d rejected; want %d, %d", dropped, rejected, tc.dropped, tc.rej)
			}
			// Every record is in one place: the batch, the dead list, or
			// past the batch's length (dropped, kept for reuse); the
			// rejected ones' slots are empty, and no two slots share a
			// Fields array.
			all := b.Records[:6]
			seen := map[*Field]bool{}
			empty := 0
			for _, r := range all {
				if r.Fields == nil {
					empty++
					continue
				}
				if seen[&r.Fields[0]] {
					t.Fatalf("two slots share the Fields of record %s", r.ID)
				}
				seen[&r.Fields[0]] = true
			}
			if empty != len(b.Dead) {
				t.Errorf("got %d cleared slots, want one per rejected record (%d)", empty, len(b.Dead))
			}
		})
	}
}

func deadRecords(ds []Dead) []Record {
	out := make([]Record, len(ds))
	for i, d := range ds {
		out[i] = d.Record
	}
	return out
}

// Keep is on every operator's hot path: it allocates nothing when no record
// is rejected.
func TestBatchKeepAllocatesNothing(t *testing.T) {
	b := batchOf(1000)
	recs := b.Records
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		b.Records = recs
		n++
		b.Keep("x", func(r *Record) (bool, error) { return (r.Fields[0].Int+int64(n))%3 != 0, nil })
		b.Records = recs
		b.KeepOrFail(func(r *Record) (bool, error) { return (r.Fields[0].Int+int64(n))%5 != 0, nil })
	})
	if allocs != 0 {
		t.Errorf("got %v allocations a call, want 0", allocs)
	}
}

func TestEnvWithDefaults(t *testing.T) {
	e := Env{}.WithDefaults()
	if e.Logger == nil || e.Now == nil || e.Secrets == nil {
		t.Fatalf("got Logger %v, Now set %v, Secrets %v; want all set", e.Logger, e.Now != nil, e.Secrets)
	}
	e.Logger.Info("goes nowhere")
	if e.Metrics != nil || e.State != nil || e.ReportError != nil || e.Unreachable != nil {
		t.Errorf("got %+v, want Metrics, State, ReportError and Unreachable left nil", e)
	}
	now := func() time.Time { return time.Unix(7, 0) }
	given := Env{Pipeline: "p", Logger: slog.New(slog.DiscardHandler), Now: now}.WithDefaults()
	if given.Pipeline != "p" || given.Now().Unix() != 7 {
		t.Errorf("got %+v, want the given fields kept", given)
	}
}
