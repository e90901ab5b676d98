package kafka

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

// fakeOwner records the owner's calls and checkpoints every partition it
// is asked to revoke at offset 10.
type fakeOwner struct {
	mu      sync.Mutex
	revoked []fakeRevoke
}

type fakeRevoke struct {
	parts []agent.TopicPartition
	lost  bool
}

func (o *fakeOwner) Assigned(_ context.Context, parts []agent.TopicPartition) (map[agent.TopicPartition]int64, error) {
	return nil, nil
}

func (o *fakeOwner) Revoked(_ context.Context, parts []agent.TopicPartition, lost bool) map[agent.TopicPartition]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.revoked = append(o.revoked, fakeRevoke{parts, lost})
	if lost {
		return nil
	}
	out := map[agent.TopicPartition]int64{}
	for _, t := range parts {
		out[t] = 10
	}
	return out
}

func (o *fakeOwner) Committable() map[agent.TopicPartition]int64 { return nil }

// TestStaleMembershipRevokedAsLost: a member that was fenced (SIGSTOP) and
// joined the group again under a new member id, without OnPartitionsLost
// (franz-go's answer to UNKNOWN_MEMBER_ID), still holds the partitions it
// was assigned under the old id; their next owner may have committed them
// already. Their revoke in the new membership must let them go as lost (no
// checkpoint, no commit), with one WARN and a metric, and a transaction
// must refuse their offsets even before the revoke comes.
func TestStaleMembershipRevokedAsLost(t *testing.T) {
	logs := &agenttest.LogBuffer{}
	s, owner, tr, cl := staleSource(t, logs)
	member, gen := "A", int32(3)
	s.membership = func(*kgo.Client) (string, int32) { return member, gen }
	ctx := context.Background()

	s.onAssigned(ctx, cl, map[string][]int32{"tele": {0, 1}})
	// The member is fenced and joins again as B; the new sync gives it
	// partition 2; 0 and 1 are still held from A's assignment.
	member, gen = "B", 5
	s.onAssigned(ctx, cl, map[string][]int32{"tele": {2}})

	// Checkpoints between the new sync and the revoke: refused, one
	// WARN for the episode.
	// (A producer that reaches no broker: a commit that is not refused
	// fails otherwise.)
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for range 2 {
		_, _, err := tr.commitOffsets(cctx, cl, map[agent.TopicPartition]int64{{Topic: "tele", Partition: 0}: 7})
		if !errors.Is(err, errStaleMember) {
			t.Fatalf("commit of a partition assigned under member A, as member B: err %v, want %v", err, errStaleMember)
		}
	}

	s.onRevoked(ctx, cl, map[string][]int32{"tele": {0, 1}})
	owner.mu.Lock()
	revoked := owner.revoked
	owner.mu.Unlock()
	if len(revoked) != 1 || !revoked[0].lost || len(revoked[0].parts) != 2 {
		t.Fatalf("owner's revokes %+v, want one of 2 partitions, lost (no checkpoint)", revoked)
	}
	// One for the refused transactions, one for the revoke.
	if got := s.stale.Get(); got != 2 {
		t.Fatalf("stale events %v, want 2", got)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 || strings.Count(logs.String(), "earlier membership") != 2 {
		t.Fatalf("%d WARNs, want 2 (the refused transactions, the revoke):\n%s", n, logs.String())
	}
	s.mu.Lock()
	_, held0 := s.parts[tp{"tele", 0}]
	_, held2 := s.parts[tp{"tele", 2}]
	s.mu.Unlock()
	if held0 || !held2 {
		t.Fatalf("after the revoke: partition 0 held %v (want false), partition 2 held %v (want true)", held0, held2)
	}
	if s.commits.Get() != 0 || s.commitErrs.Get() != 0 {
		t.Fatalf("commits %v, commit errors %v: a commit of the stale partitions was tried", s.commits.Get(), s.commitErrs.Get())
	}
	// Partition 2, assigned under B, commits as B.
	if err := s.staleOffsets(map[agent.TopicPartition]int64{{Topic: "tele", Partition: 2}: 4}, "B"); err != nil {
		t.Fatalf("partition assigned under B refused: %v", err)
	}
}

// staleSource returns an exactly-once source with a fake owner and a
// client that reaches no broker, outside Connect.
func staleSource(t *testing.T, logs *agenttest.LogBuffer) (*Source, *fakeOwner, *transactor, *kgo.Client) {
	t.Helper()
	c := *Defaults()
	c.Brokers = []string{"127.0.0.1:1"}
	c.Topics = []string{"tele"}
	c.Isolation = "read_committed"
	env := agent.Env{Pipeline: "t", Component: "kafka", AgentName: "gw1", Logger: logs.Logger(slog.LevelInfo)}
	s, err := New(c, env)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	owner := &fakeOwner{}
	s.SetPartitionOwner(owner)
	tr, err := s.Transactions(&changelog{s: s, topic: "cl"}, agent.TxnTarget{TransactionalID: "tx"})
	if err != nil {
		t.Fatalf("transactions: %v", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	s.cl.Store(cl)
	return s, owner, tr.(*transactor), cl
}

// staleGivenBack returns staleSource's source holding partition 0,
// assigned under member A, as member B now: the new membership was given
// it back (no revoke, no assign); and a context that ends within a second.
func staleGivenBack(t *testing.T, logs *agenttest.LogBuffer) (*Source, *fakeOwner, *transactor, *kgo.Client, context.Context) {
	t.Helper()
	s, owner, tr, cl := staleSource(t, logs)
	member := "A"
	s.membership = func(*kgo.Client) (string, int32) { return member, 1 }
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	s.onAssigned(ctx, cl, map[string][]int32{"tele": {0}})
	member = "B"
	return s, owner, tr, cl, ctx
}

// TestStaleMembershipGivenBack: the new membership is given the same
// partitions back, so no revoke nor assign comes for them. Their first
// transaction is refused, and the next Read lets them go as lost (their
// uncommitted state dropped) and restarts the client, whose assignment
// restores them.
func TestStaleMembershipGivenBack(t *testing.T) {
	s, owner, tr, cl, ctx := staleGivenBack(t, &agenttest.LogBuffer{})
	if _, _, err := tr.commitOffsets(ctx, cl, map[agent.TopicPartition]int64{{Topic: "tele", Partition: 0}: 7}); !errors.Is(err, errStaleMember) {
		t.Fatalf("commit of a partition given back, as member B: err %v, want %v", err, errStaleMember)
	}
	if !s.restart.Load() {
		t.Fatal("a refused stale transaction does not restart the client")
	}
	s.restartClient(ctx)
	owner.mu.Lock()
	revoked := owner.revoked
	owner.mu.Unlock()
	if len(revoked) != 1 || !revoked[0].lost || len(revoked[0].parts) != 1 || revoked[0].parts[0].Partition != 0 {
		t.Fatalf("owner's revokes %+v, want partition 0, lost", revoked)
	}
	if s.cl.Load() != nil || len(s.parts) != 0 {
		t.Fatalf("client %v, partitions %d after the restart: want none", s.cl.Load(), len(s.parts))
	}
	if s.commits.Get() != 0 || s.commitErrs.Get() != 0 {
		t.Fatalf("commits %v, commit errors %v: a commit of the stale partition was tried", s.commits.Get(), s.commitErrs.Get())
	}
}

// TestStaleMembershipGroupCommit: the group commit (commitLocked, the
// committer's and Close's) leaves out a partition held under an earlier
// member id, reports it once, and has the next Read restart the client.
func TestStaleMembershipGroupCommit(t *testing.T) {
	logs := &agenttest.LogBuffer{}
	s, _, _, _, ctx := staleGivenBack(t, logs)
	s.commitNow(ctx)
	s.commitNow(ctx)
	if s.commits.Get() != 0 || s.commitErrs.Get() != 0 {
		t.Fatalf("commits %v, commit errors %v: a commit of the stale partition was tried", s.commits.Get(), s.commitErrs.Get())
	}
	if !s.restart.Load() || s.stale.Get() != 1 || strings.Count(logs.String(), "level=WARN") != 1 {
		t.Fatalf("restart %v, stale events %v, want true, 1 and one WARN:\n%s", s.restart.Load(), s.stale.Get(), logs.String())
	}
}
