package runner_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// redriveSink fails its first Write, then refuses for good the records
// with a field bad, while refuse is set, and accepts the rest.
type redriveSink struct {
	writes int
	refuse bool
	ids    []string
}

func (s *redriveSink) Connect(context.Context) error { return nil }
func (s *redriveSink) Close(context.Context) error   { return nil }
func (s *redriveSink) Write(_ context.Context, recs []agent.Record) error {
	s.writes++
	if s.writes == 1 {
		return errors.New("uplink down")
	}
	var rej *agent.RejectedError
	for i, r := range recs {
		if s.refuse && r.Field("bad") != nil {
			if rej == nil {
				rej = &agent.RejectedError{}
			}
			rej.Index = append(rej.Index, i)
			rej.Errs = append(rej.Errs, errors.New("still too large"))
			continue
		}
		if r.Field(runner.DeadErrorField) != nil || r.Field(runner.DeadComponentField) != nil {
			return errors.New("a dead letter's own fields were sent")
		}
		s.ids = append(s.ids, r.ID)
	}
	if rej != nil {
		return rej
	}
	return nil
}

type cursorSink struct{ redriveSink }

func (cursorSink) Cursor(context.Context) (uint64, bool, error) { return 0, false, nil }

func deadLetter(t *testing.T, r agent.Record, component string) []byte {
	t.Helper()
	r.Fields = append(r.Fields, agent.String(runner.DeadErrorField, "topic missing"), agent.String(runner.DeadComponentField, component))
	b, err := r.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRedrive sends dead letters through a sink: only those it refused
// (another component's are skipped, an undecodable one left), with their
// IDs and without the dead-letter fields; a retryable failure is retried; a
// record refused again goes back to the dead-letter log with its new
// reason; a second run sends only that one once it is accepted; --all
// sends the others, with an ID made from their dead-letter sequence.
func TestRedrive(t *testing.T) {
	ctx := context.Background()
	dead := agenttest.NewMemLog()
	payloads := [][]byte{
		deadLetter(t, agent.Record{ID: "p:1", Fields: []agent.Field{agent.Int("n", 1)}}, "up"),
		deadLetter(t, agent.Record{ID: "p:2", Fields: []agent.Field{agent.Int("n", 2)}}, "up"),
		deadLetter(t, agent.Record{Raw: []byte("not json")}, "decode"),
		{0xc1, 0xff}, // not a record
		deadLetter(t, agent.Record{ID: "p:4", Fields: []agent.Field{agent.Int("n", 4), agent.Bool("bad", true)}}, "up"),
		deadLetter(t, agent.Record{ID: "p:5", Fields: []agent.Field{agent.Int("n", 5)}}, "up"),
	}
	if _, err := dead.Append(ctx, payloads); err != nil {
		t.Fatal(err)
	}
	opts := runner.RedriveOptions{Pipeline: "p", Sink: "up", Retry: runner.RetryConfig{Initial: time.Millisecond, Max: 2 * time.Millisecond}}
	sink := &redriveSink{refuse: true}
	pr, err := runner.Redrive(ctx, dead, sink, opts)
	want := runner.RedriveProgress{Total: 6, Seen: 6, Sent: 3, Skipped: 1, Refused: 1, Undecodable: 1}
	if err != nil || pr != want {
		t.Fatalf("first run: got %+v, %v; want %+v", pr, err, want)
	}
	if !slices.Equal(sink.ids, []string{"p:1", "p:2", "p:5"}) || sink.writes != 2 {
		t.Errorf("first run: sent %v in %d writes, want p:1 p:2 p:5 after one failed write", sink.ids, sink.writes)
	}
	// The refused one is back in the dead letters with its new reason.
	if next := dead.NextSeq(); next != 8 {
		t.Fatalf("dead-letter log next %d, want 8 (one record appended)", next)
	}
	r, _ := dead.Reader("check")
	got, err := r.Read(ctx, make([]runner.LogRecord, 0, 10), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var rec agent.Record
	comp, reason, err := runner.DecodeDead(got[len(got)-1].Payload, &rec)
	if err != nil || comp != "up" || !strings.Contains(reason, "still too large") || rec.ID != "p:4" {
		t.Errorf("re-appended dead letter: %q %q %q %v, want p:4 refused by up, still too large", rec.ID, comp, reason, err)
	}

	sink.refuse, sink.ids = false, nil
	pr, err = runner.Redrive(ctx, dead, sink, opts)
	if want := (runner.RedriveProgress{Total: 1, Seen: 1, Sent: 1}); err != nil || pr != want || !slices.Equal(sink.ids, []string{"p:4"}) {
		t.Errorf("second run: got %+v, %v, sent %v; want %+v and p:4", pr, err, sink.ids, want)
	}
	sink.ids = nil
	if pr, err = runner.Redrive(ctx, dead, sink, opts); err != nil || pr.Seen != 0 || len(sink.ids) != 0 {
		t.Errorf("third run: got %+v, %v, sent %v; want nothing", pr, err, sink.ids)
	}

	opts.All = true
	sink.ids = nil
	pr, err = runner.Redrive(ctx, dead, sink, opts)
	if err != nil || pr.Sent != 6 || pr.Undecodable != 1 || !slices.Contains(sink.ids, "p:dead:3") {
		t.Errorf("--all: got %+v, %v, sent %v; want 6 sent (every record, p:4 in both its copies, the decoder's as p:dead:3)", pr, err, sink.ids)
	}

	if _, err := runner.Redrive(ctx, dead, &cursorSink{}, opts); err == nil || !strings.Contains(err.Error(), "exactly_once") {
		t.Errorf("through a sink with its own cursor: got %v, want a refusal", err)
	}
}
