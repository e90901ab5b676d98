package kafka

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// testSource builds and connects a source outside a pipeline: the test
// reads its batches and acks them itself.
func testSource(t *testing.T, addrs []string, mutate func(*Config), logs *agenttest.LogBuffer) *Source {
	t.Helper()
	c := *Defaults()
	c.Brokers = addrs
	c.CommitInterval = 20 * time.Millisecond
	c.FetchMaxWait = 100 * time.Millisecond
	c.UnreachableAfter = time.Second
	c.MaxRetryBackoff = 500 * time.Millisecond
	c.StaticMembership = false
	c.SessionTimeout = 6 * time.Second
	c.HeartbeatInterval = 200 * time.Millisecond
	mutate(&c)
	env := agent.Env{Pipeline: "t", Component: "kafka", AgentName: "gw1", Now: time.Now}
	if logs != nil {
		env.Logger = logs.Logger(slog.LevelInfo)
	}
	s, err := New(c, env)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// read returns the next batch within d.
func read(t *testing.T, s *Source, d time.Duration) ([]agent.Record, agent.AckFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	recs, ack, err := s.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return recs, ack
}

// partitionEnds returns, per partition, the offset after the last record of
// recs.
func partitionEnds(recs []agent.Record) map[int32]int64 {
	out := map[int32]int64{}
	for _, r := range recs {
		p, o := int32(r.Field(FieldPartition).Int), r.Field(FieldOffset).Int
		out[p] = max(out[p], o+1)
	}
	return out
}

// TestRevokeWaitsForInFlight holds the ack of a batch while a second
// member joins and takes some of its partitions. The revoke waits for the
// batch: acked within the wait, its offsets are committed before the
// partitions move, and the new owner starts right after it (no record
// twice, none skipped). Acked after the wait, the ack commits nothing for
// partitions no longer ours: the new owner's commits are never rewound.
func TestRevokeWaitsForInFlight(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := "acked in time"
		if late {
			name = "acked late"
		}
		t.Run(name, func(t *testing.T) {
			k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(2, "cmds"))
			prod := newProducer(t, k.Addrs(), "cmds", 8)
			prod.produce(400)
			group := "revoke-" + map[bool]string{false: "in-time", true: "late"}[late]
			cfg := func(c *Config) {
				c.Topics, c.Group, c.BatchSize = []string{"cmds"}, group, 1000
				c.RebalanceTimeout = 2 * time.Second // the revoke waits up to 1s
			}
			logsA := &agenttest.LogBuffer{}
			a := testSource(t, k.Addrs(), cfg, logsA)
			// Read, without acking, until the batches held cover both
			// partitions: whichever b takes has a batch in flight.
			var held []agent.Record
			var acks []agent.AckFunc
			for len(partitionEnds(held)) < 2 {
				recs, ackN := read(t, a, 10*time.Second)
				held, acks = append(held, recs...), append(acks, ackN)
			}
			ack := func(ctx context.Context, err error) {
				for _, a := range acks {
					a(ctx, err)
				}
			}
			ends := partitionEnds(held)
			acked := make(chan struct{})
			go func() {
				defer close(acked)
				if late {
					// After the revoke gave up on it.
					agenttest.Eventually(t, 20*time.Second, "the revoke to give up", func() bool {
						return len(logsA.Lines("batches not yet durable")) > 0
					}, logsA)
				} else {
					time.Sleep(300 * time.Millisecond) // well within the revoke's wait of 1s
				}
				ack(context.Background(), nil)
			}()
			b := testSource(t, k.Addrs(), cfg, nil)
			<-acked
			agenttest.Eventually(t, 20*time.Second, "b to be assigned a partition", func() bool { return b.assigned.Get() > 0 }, logsA)
			prod.produce(100) // a read everything before: b needs new records
			recsB, ackB := read(t, b, 20*time.Second)
			first := map[int32]int64{}
			for _, r := range recsB {
				p, o := int32(r.Field(FieldPartition).Int), r.Field(FieldOffset).Int
				if _, ok := first[p]; !ok {
					first[p] = o
				}
			}
			if len(first) != 1 {
				t.Fatalf("b got partitions %v, want one of the two", first)
			}
			for p, o := range first {
				switch {
				case !late && o != ends[p]:
					t.Errorf("partition %d: b starts at %d, want %d, right after a's durable batch", p, o, ends[p])
				case late && o != 0:
					t.Errorf("partition %d: b starts at %d, want 0 (a's batch was not durable when the partition moved)", p, o)
				}
				// b moves its partition on; a's late ack must not rewind it.
				ackB(context.Background(), nil)
				want := o + int64(len(recsB))
				agenttest.Eventually(t, 10*time.Second, "b's commit", func() bool {
					return committed(t, k.Addrs(), group, "cmds", 2)[p] == want
				}, nil)
				a.commitNow(context.Background())
				if got := committed(t, k.Addrs(), group, "cmds", 2)[p]; got != want {
					t.Errorf("partition %d: committed %d after a's commit, want b's %d", p, got, want)
				}
			}
		})
	}
}
