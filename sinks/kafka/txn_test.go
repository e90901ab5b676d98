package kafka

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// TestExactlyOnceCursor checks the transactional write path: the cursor
// committed with the records, reloaded by a new instance, records at or
// below it skipped, and refused records leaving the others committed.
func TestExactlyOnceCursor(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(2, "t"))
	cfg := testConfig(k.Addr(), "t")
	cfg.Delivery = "exactly_once"
	cfg.BatchBytes = 4 << 10
	ctx := context.Background()

	s := connect(t, cfg)
	if seq, ok, err := s.Cursor(ctx); err != nil || ok {
		t.Fatalf("fresh cursor: got %d %v %v, want none", seq, ok, err)
	}
	if err := s.Write(ctx, makeRecords(1, 20, 3)); err != nil {
		t.Fatalf("write: %v", err)
	}
	recs := makeRecords(21, 10, 3)
	recs[4].Fields = append(recs[4].Fields, agent.String("blob", strings.Repeat("x", 8<<10)))
	err := s.Write(ctx, recs)
	var rej *agent.RejectedError
	if !errors.As(err, &rej) || len(rej.Index) != 1 || rej.Index[0] != 4 || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("got %v, want record 4 refused as too large", err)
	}
	s.Close(ctx)

	// A new instance (a restart) fences the old one and reads the cursor.
	s2 := connect(t, cfg)
	seq, ok, err := s2.Cursor(ctx)
	if err != nil || !ok || seq != 30 {
		t.Fatalf("cursor after restart: got %d %v %v, want 30", seq, ok, err)
	}
	// The runner may hand over records the cursor covers (its own cursor
	// lags): they are skipped, the rest committed.
	if err := s2.Write(ctx, makeRecords(25, 10, 3)); err != nil {
		t.Fatalf("write across the cursor: %v", err)
	}
	got := consume(t, k.Addr(), 33, 10*time.Second, []string{"t"}, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ids := map[string]int{}
	for _, r := range got {
		ids[header(r, HeaderID)]++
	}
	if len(got) != 33 || len(ids) != 33 || ids["p:25"] != 0 {
		t.Errorf("got %d records, %d distinct (p:25 %d times), want 33 distinct without p:25", len(got), len(ids), ids["p:25"])
	}
	if seq, _, _ := s2.Cursor(ctx); seq != 34 {
		t.Errorf("got cursor %d, want 34", seq)
	}
}
