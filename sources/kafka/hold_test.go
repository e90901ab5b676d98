package kafka

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// rawMember is a group member driven request by request, so that a test
// decides when it rejoins.
type rawMember struct {
	t     *testing.T
	cl    *kgo.Client
	group string
	id    string
	gen   int32
}

func (m *rawMember) join(ctx context.Context) *kmsg.JoinGroupResponse {
	m.t.Helper()
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 1
	meta.Topics = []string{"cmds"}
	for {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group = m.group
		req.MemberID = m.id
		req.SessionTimeoutMillis = 30000
		req.RebalanceTimeoutMillis = 30000
		req.ProtocolType = "consumer"
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name = "cooperative-sticky"
		p.Metadata = meta.AppendTo(nil)
		req.Protocols = append(req.Protocols, p)
		resp, err := req.RequestWith(ctx, m.cl)
		if err != nil {
			m.t.Fatalf("raw member: join: %v", err)
		}
		m.id = resp.MemberID
		if resp.ErrorCode == kerr.MemberIDRequired.Code {
			continue
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			m.t.Fatalf("raw member: join: %v", err)
		}
		m.gen = resp.Generation
		return resp
	}
}

// leadAlone syncs as the group's only member, assigned nothing.
func (m *rawMember) leadAlone(ctx context.Context) {
	m.t.Helper()
	req := kmsg.NewPtrSyncGroupRequest()
	req.Group, req.MemberID, req.Generation = m.group, m.id, m.gen
	a := kmsg.NewSyncGroupRequestGroupAssignment()
	a.MemberID = m.id
	none := kmsg.NewConsumerMemberAssignment()
	a.MemberAssignment = none.AppendTo(nil)
	req.GroupAssignment = append(req.GroupAssignment, a)
	resp, err := req.RequestWith(ctx, m.cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		m.t.Fatalf("raw member: sync: %v", err)
	}
}

func (m *rawMember) leave(ctx context.Context) {
	m.t.Helper()
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = m.group
	mem := kmsg.NewLeaveGroupRequestMember()
	mem.MemberID = m.id
	req.Members = append(req.Members, mem)
	if _, err := req.RequestWith(ctx, m.cl); err != nil {
		m.t.Fatalf("raw member: leave: %v", err)
	}
}

// groupState returns the group's state as the coordinator describes it.
func (m *rawMember) groupState(ctx context.Context) string {
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{m.group}
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil || len(resp.Groups) != 1 {
		return ""
	}
	return resp.Groups[0].State
}

// TestRebalanceHoldIsNotAnOutage joins the source to a group whose other
// member takes three times unreachable_after to rejoin: the coordinator
// holds the source's JoinGroup all that while, as a broker may (up to the
// rebalance timeout), and nothing else is in flight. The brokers answer
// everything else at once, so the source must not report them unreachable:
// no WARN, no last_error, online stays 1; and it then reads every record.
func TestRebalanceHoldIsNotAnOutage(t *testing.T) {
	t.Parallel()
	const total = 300
	k := testbroker.StartKafkaBrokers(t, 1, kfake.SeedTopics(3, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 8)
	prod.produce(total)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := &rawMember{t: t, cl: cl, group: "held"}
	b.join(ctx)
	b.leadAlone(ctx)

	logs := &agenttest.LogBuffer{}
	p := startPipe(t, "held", sourceYAML(k.Addrs(), "cmds", ", group: held"), t.TempDir(), logs.Logger(slog.LevelInfo))
	// The source's JoinGroup starts a rebalance, which waits for b.
	agenttest.Eventually(t, 30*time.Second, "the source's join to start a rebalance", func() bool {
		return b.groupState(ctx) == "PreparingRebalance"
	}, logs)
	held := time.NewTimer(3 * time.Second) // 3 x unreachable_after: the fault
	<-held.C
	b.join(ctx)
	b.leave(ctx) // the source rejoins alone and takes every partition
	agenttest.Eventually(t, 30*time.Second, "every record in the sink", func() bool { return tally(t, p.sink).all(total) }, logs)
	if n := logs.Count("brokers unreachable"); n != 0 {
		t.Errorf("got %d unreachable WARNs while the coordinator held a JoinGroup, want 0\n%s", n, logs)
	}
	if got := p.metric(`pspf_kafka_source_unreachable_total{`); got != 0 {
		t.Errorf("pspf_kafka_source_unreachable_total = %v, want 0", got)
	}
}
