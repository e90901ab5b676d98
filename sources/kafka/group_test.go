package kafka

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// sourceYAML is the kafka source of the tests: fast commits, a short
// fetch wait and quick retries.
func sourceYAML(addrs []string, topic, extra string) string {
	b := "{brokers: ["
	for i, a := range addrs {
		if i > 0 {
			b += ", "
		}
		b += a
	}
	return b + "], topics: [" + topic + "], commit_interval: 50ms, fetch_max_wait: 100ms, unreachable_after: 1s, max_retry_backoff: 500ms" + extra + "}"
}

// TestGroupJoinDelivers joins a group on a 3-broker cluster, reads what was
// produced before and while it runs, and on a clean stop leaves every
// partition's committed offset at its end: lost 0, duplicates 0, records
// with their origin and headers as fields, in partition order.
func TestGroupJoinDelivers(t *testing.T) {
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(6, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 16)
	prod.produce(3000)
	logs := &agenttest.LogBuffer{}
	p := startPipe(t, "join", sourceYAML(k.Addrs(), "cmds", ""), t.TempDir(), logs.Logger(slog.LevelInfo))
	prod.stream(6000, 100, 5*time.Millisecond, nil)
	deadline := time.Now().Add(60 * time.Second)
	for !tally(t, p.sink).all(6000) {
		if time.Now().After(deadline) {
			l, _ := tally(t, p.sink).lost(6000)
			t.Fatalf("timed out: %d records missing, first %v\n%s", len(l), l[:min(10, len(l))], logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop(t)
	s := tally(t, p.sink)
	lost, dups := s.lost(6000)
	t.Logf("6000 records, one member: lost %d, duplicates %d", len(lost), dups)
	if len(lost) != 0 || dups != 0 {
		t.Errorf("got lost %d, duplicates %d, want 0 and 0", len(lost), dups)
	}
	for name, err := range s.order {
		t.Errorf("%s: %v", name, err)
	}
	if w := logs.Lines("level=WARN"); len(w) > 0 {
		t.Errorf("got warnings in a run without faults:\n%s", strings.Join(w, "\n"))
	}
	want := endOffsets(t, k.Addrs(), "cmds", 6)
	got := committed(t, k.Addrs(), "pspf-edge-gw1-join-kafka", "cmds", 6)
	for _, part := range sortedKeys(want) {
		if got[part] != want[part] {
			t.Errorf("partition %d: committed %d, want the end offset %d", part, got[part], want[part])
		}
	}
}

// watchCommits samples the group's committed offsets every 10ms until the
// returned stop is called, which returns the first offset that went back
// (a commit of a partition by a member that no longer owns it, behind its
// new owner) and the number of samples.
func watchCommits(t *testing.T, addrs []string, group, topic string, partitions int) func() (error, int) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	var back error
	samples := 0
	go func() {
		defer close(done)
		last := map[int32]int64{}
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for p, off := range committed(t, addrs, group, topic, partitions) {
				if l, ok := last[p]; ok && off < l && back == nil {
					back = fmt.Errorf("partition %d: committed offset went back from %d to %d", p, l, off)
				}
				if l, ok := last[p]; !ok || off > l {
					last[p] = off
				}
			}
			samples++
		}
	}()
	return func() (error, int) {
		close(stop)
		<-done
		return back, samples
	}
}

// TestRebalanceJoinLeave streams records while a second member joins the
// group (cooperative-sticky: the first gives up half its partitions, with
// batches in flight) and later leaves (the first takes them back). Every
// record reaches one of the two pipelines (lost 0; the duplicates a
// rebalance may cause are counted), each pipeline sees each partition in
// order, the group's committed offsets never go back, and at the end they
// are the partitions' end offsets.
func TestRebalanceJoinLeave(t *testing.T) {
	t.Parallel()
	const total = 9000
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(6, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 32)
	src := sourceYAML(k.Addrs(), "cmds", ", group: shared, static_membership: false, session_timeout: 6s, heartbeat_interval: 200ms")
	logsA, logsB := &agenttest.LogBuffer{}, &agenttest.LogBuffer{}
	a := startPipe(t, "a", src, t.TempDir(), logsA.Logger(slog.LevelInfo))
	stopWatch := watchCommits(t, k.Addrs(), "shared", "cmds", 6)
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		prod.stream(total, 30, 10*time.Millisecond, nil)
	}()
	agenttest.Eventually(t, 30*time.Second, "a third of the records produced", func() bool { return prod.produced() >= total/3 }, nil)
	b := startPipe(t, "b", src, t.TempDir(), logsB.Logger(slog.LevelInfo))
	agenttest.Eventually(t, 30*time.Second, "the second member to get records", func() bool { return len(b.sink.Records()) > 0 }, logsB)
	agenttest.Eventually(t, 30*time.Second, "two thirds of the records produced", func() bool { return prod.produced() >= 2*total/3 }, nil)
	// a's first assignment is not counted when it comes before its client
	// is stored (its Read then takes the partitions in); the one after b
	// leaves always is.
	assignedA := `pspf_kafka_source_rebalances_total{pipeline="a",component="kafka",event="assigned"}`
	assignedBefore := a.metric(assignedA)
	b.stop(t)
	<-streamed
	agenttest.Eventually(t, 60*time.Second, "every record in a sink", func() bool { return tally(t, a.sink, b.sink).all(total) }, logsA)
	a.stop(t)
	back, samples := stopWatch()
	s := tally(t, a.sink, b.sink)
	lost, dups := s.lost(total)
	t.Logf("%d records, a member joining and leaving: lost %d, duplicates %d; a got %d, b got %d; %d commit samples",
		total, len(lost), dups, len(a.sink.Records()), len(b.sink.Records()), samples)
	if len(lost) != 0 {
		t.Errorf("got %d lost (first %v), want 0", len(lost), lost[:min(10, len(lost))])
	}
	for name, err := range s.order {
		t.Errorf("%s: %v", name, err)
	}
	if back != nil {
		t.Error(back)
	}
	if got := a.metric(`pspf_kafka_source_rebalances_total{pipeline="a",component="kafka",event="revoked"}`); got < 1 {
		t.Errorf("a: got %v revokes, want at least 1 (b joined)\n%s", got, logsA)
	}
	if got := a.metric(assignedA); got < assignedBefore+1 {
		t.Errorf("a: got %v assignments, %v before b left, want at least one more (b left)\n%s", got, assignedBefore, logsA)
	}
	want := endOffsets(t, k.Addrs(), "cmds", 6)
	got := committed(t, k.Addrs(), "shared", "cmds", 6)
	for _, part := range sortedKeys(want) {
		if got[part] != want[part] {
			t.Errorf("partition %d: committed %d, want the end offset %d", part, got[part], want[part])
		}
	}
}

// TestBrokerRestart streams records while every partition's leader moves
// (an election, as when a broker restarts) and later the brokers, all
// three, go away for a while and come back with their data. Every record arrives (lost 0,
// duplicates counted); while the cluster is away the source says so once
// (one WARN, the pipeline's last_error, pspf_kafka_source_online 0), and
// once it is back it says so once and the error is cleared.
func TestBrokerRestart(t *testing.T) {
	const total = 6000
	k := testbroker.StartKafkaBrokers(t, 3, kfake.SeedTopics(6, "cmds"))
	prod := newProducer(t, k.Addrs(), "cmds", 32)
	logs := &agenttest.LogBuffer{}
	p := startPipe(t, "restart", sourceYAML(k.Addrs(), "cmds", ""), t.TempDir(), logs.Logger(slog.LevelInfo))
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		prod.stream(total, 30, 10*time.Millisecond, nil)
	}()
	agenttest.Eventually(t, 30*time.Second, "a third of the records produced", func() bool { return prod.produced() >= total/3 }, nil)
	// Every partition gets a new leader, as after a broker's restart.
	// (kfake's RemoveNode leaves the removed broker's connections open,
	// answering NOT_LEADER forever: not a restart any real broker does.)
	k.Cluster().ShufflePartitionLeaders()
	agenttest.Eventually(t, 30*time.Second, "two thirds of the records produced", func() bool { return prod.produced() >= 2*total/3 }, nil)
	k.Stop()
	agenttest.Eventually(t, 20*time.Second, "the source to report the brokers unreachable", func() bool {
		return strings.Contains(p.p.LastError(), "no answer from the brokers") && p.metric(`pspf_kafka_source_online{`) == 0
	}, logs)
	k.Start()
	<-streamed
	agenttest.Eventually(t, 60*time.Second, "every record in the sink", func() bool { return tally(t, p.sink).all(total) }, logs)
	agenttest.Eventually(t, 20*time.Second, "the error to be cleared", func() bool {
		return p.p.LastError() == "" && p.metric(`pspf_kafka_source_online{`) == 1
	}, logs)
	p.stop(t)
	s := tally(t, p.sink)
	lost, dups := s.lost(total)
	t.Logf("%d records, leaders moved, then the cluster restarted: lost %d, duplicates %d", total, len(lost), dups)
	if len(lost) != 0 {
		t.Errorf("got %d lost (first %v), want 0", len(lost), lost[:min(10, len(lost))])
	}
	for name, err := range s.order {
		t.Errorf("%s: %v", name, err)
	}
	if n := len(logs.Lines("brokers unreachable")); n != 1 {
		t.Errorf("got %d 'brokers unreachable' lines, want 1\n%s", n, logs)
	}
	if n := len(logs.Lines("brokers answering again")); n != 1 {
		t.Errorf("got %d 'brokers answering again' lines, want 1\n%s", n, logs)
	}
	t.Logf("log:\n%s", logs)
}
