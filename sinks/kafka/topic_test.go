package kafka

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// checkEpisode checks that the sink said once that it went offline (with
// want in the reason), once that it came back, and that no franz-go warning
// repeated.
func checkEpisode(t *testing.T, logs *agenttest.LogBuffer, want string) {
	t.Helper()
	off := logs.Lines("sink offline")
	if len(off) != 1 || !strings.Contains(off[0], want) {
		t.Errorf("got 'sink offline' lines %q, want one naming %s", off, want)
	}
	if n := len(logs.Lines("sink online again")); n != 1 {
		t.Errorf("got %d 'sink online again' lines, want 1", n)
	}
	seen := map[string]bool{}
	for _, l := range logs.Lines("level=WARN") {
		msg := l[strings.Index(l, "msg="):]
		if i := strings.Index(msg, `" `); strings.HasPrefix(msg, `msg="`) && i > 0 {
			msg = msg[:i]
		}
		if seen[msg] {
			t.Errorf("WARN %s logged more than once in the episode", msg)
		}
		seen[msg] = true
	}
}

// TestLateTopicDelivered starts a pipeline on a topic that does not exist
// yet (auto_create_topics off), as when the agent is deployed before the
// topic: the sink must wait offline, saying why, and deliver every record
// once the topic is created; nothing goes to the dead letters.
func TestLateTopicDelivered(t *testing.T) {
	k := testbroker.StartKafka(t)
	const total = 3000
	hold := make(chan struct{})
	src := &steadySource{total: total, per: 20, keys: 4, interval: time.Millisecond, hold: hold}
	logs := &agenttest.LogBuffer{}
	r := startPipeline(t, src, "{brokers: ["+k.Addr()+"], topic: late}", t.TempDir(), logs.Logger(slog.LevelInfo))
	if !wait.Until(30*time.Second, func() bool {
		st := r.sink()
		return !st.Online && strings.Contains(st.LastError, kerr.UnknownTopicOrPartition.Message) && st.Retries >= 2
	}) {
		t.Fatalf("got %+v, want the sink offline naming the missing topic, after 2 retries", r.sink())
	}
	if err := k.Cluster().CreateTopic("late", 3, nil); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	close(hold)
	r.wait(t)
	ps := r.p.Status()
	st := ps.Sinks[0]
	if ps.DeadLetters != 0 || st.Rejected != 0 {
		t.Errorf("got %d dead letters, %d rejected, want none", ps.DeadLetters, st.Rejected)
	}
	if !st.Online || st.LastError != "" || !st.OfflineSince.IsZero() || ps.LastError != "" {
		t.Errorf("got online %v, last_error %q, offline_since %v, pipeline last_error %q; want online and cleared", st.Online, st.LastError, st.OfflineSince, ps.LastError)
	}
	got := consume(t, k.Addr(), total, 30*time.Second, []string{"late"})
	dups := checkDelivery(t, got, total)
	t.Logf("%d records, %d duplicates, %d retries while the topic was missing", len(got), dups, st.Retries)
	checkEpisode(t, logs, "UNKNOWN_TOPIC_OR_PARTITION")
}

// TestTemplateMissingTopicSendsNoRepeats routes half the records to a topic
// that exists and half to one created late: while the sink retries, the
// records the first topic accepted are not sent again with every retry.
func TestTemplateMissingTopicSendsNoRepeats(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.SeedTopics(2, "t.k0"))
	const total = 1000
	hold := make(chan struct{})
	src := &steadySource{total: total, per: 20, keys: 2, interval: time.Millisecond, hold: hold}
	r := startPipeline(t, src, "{brokers: ["+k.Addr()+"], topic: 't.{_key}'}", t.TempDir(), nil)
	if !wait.Until(30*time.Second, func() bool { return r.sink().Retries >= 2 }) {
		t.Fatalf("got %+v, want the sink retrying for the missing topic", r.sink())
	}
	if err := k.Cluster().CreateTopic("t.k1", 2, nil); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	close(hold)
	r.wait(t)
	got := consume(t, k.Addr(), total, 30*time.Second, []string{"t.k0", "t.k1"})
	dups := checkDelivery(t, got, total)
	if dups != 0 {
		t.Errorf("got %d duplicates over %d retries, want none: accepted records were sent again", dups, r.sink().Retries)
	}
	if d := r.p.Status().DeadLetters; d != 0 {
		t.Errorf("got %d dead letters, want none", d)
	}
}

// TestMissingACLRetriedUntilGranted runs a pipeline as a principal that may
// not write its topic: the sink must wait offline with the authorization
// error, and deliver everything once the ACL is granted.
func TestMissingACLRetriedUntilGranted(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.SeedTopics(2, "t"),
		kfake.Superuser("PLAIN", "admin", "admin"),
		kfake.User("PLAIN", "gw", "pw",
			kfake.ACL{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "t", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true}))
	const total = 2000
	hold := make(chan struct{})
	src := &steadySource{total: total, per: 20, keys: 4, interval: time.Millisecond, hold: hold}
	logs := &agenttest.LogBuffer{}
	r := startPipeline(t, src, "{brokers: ["+k.Addr()+"], topic: t, sasl: {mechanism: plain, username: gw, password: pw}}", t.TempDir(), logs.Logger(slog.LevelInfo))
	if !wait.Until(30*time.Second, func() bool {
		st := r.sink()
		return !st.Online && strings.Contains(st.LastError, "TOPIC_AUTHORIZATION_FAILED") && st.Retries >= 2
	}) {
		t.Fatalf("got %+v, want the sink offline naming the authorization failure, after 2 retries", r.sink())
	}
	admin, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.SASL(plain.Auth{User: "admin", Pass: "admin"}.AsMechanism()))
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	defer admin.Close()
	req := kmsg.NewPtrCreateACLsRequest()
	c := kmsg.NewCreateACLsRequestCreation()
	c.ResourceType, c.ResourceName, c.ResourcePatternType = kmsg.ACLResourceTypeTopic, "t", kmsg.ACLResourcePatternTypeLiteral
	c.Principal, c.Host = "User:gw", "*"
	c.Operation, c.PermissionType = kmsg.ACLOperationWrite, kmsg.ACLPermissionTypeAllow
	req.Creations = append(req.Creations, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, admin)
	if err != nil || len(resp.Results) != 1 || resp.Results[0].ErrorCode != 0 {
		t.Fatalf("grant write: %v %+v", err, resp)
	}
	close(hold)
	r.wait(t)
	ps := r.p.Status()
	st := ps.Sinks[0]
	if ps.DeadLetters != 0 || st.Rejected != 0 {
		t.Errorf("got %d dead letters, %d rejected, want none", ps.DeadLetters, st.Rejected)
	}
	if !st.Online || st.LastError != "" || ps.LastError != "" {
		t.Errorf("got online %v, last_error %q, pipeline last_error %q; want online and cleared", st.Online, st.LastError, ps.LastError)
	}
	got := consume(t, k.Addr(), total, 30*time.Second, []string{"t"}, kgo.SASL(plain.Auth{User: "admin", Pass: "admin"}.AsMechanism()))
	dups := checkDelivery(t, got, total)
	t.Logf("%d records, %d duplicates, %d retries while not authorized", len(got), dups, st.Retries)
	checkEpisode(t, logs, "TOPIC_AUTHORIZATION_FAILED")
}
