package mqtt

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// refusingBroker is a scripted MQTT 5 broker that answers each PUBLISH
// with the PUBACK reason code code(kind) chooses by the message's "kind"
// field (0 accepts it), with a reason string, and counts the messages it
// accepted by payload (_id).
type refusingBroker struct {
	*mqtttest.Broker
	code func(kind string) byte
	// closeAfter closes the connection after a refusal, as mosquitto
	// 2.0.11 does: its PUBACKs, the refusing one too, are written only
	// once it has handled every packet it read, so the close (a reset,
	// with packets left unread) loses those of the packets read with the
	// refused one.
	closeAfter bool

	mu       sync.Mutex
	accepted map[string]int // _id: times accepted
	refused  map[string]int // _id: times refused
}

func startRefusing(t *testing.T, closeAfter bool, code func(kind string) byte) *refusingBroker {
	t.Helper()
	b := &refusingBroker{code: code, closeAfter: closeAfter, accepted: map[string]int{}, refused: map[string]int{}}
	b.Broker = mqtttest.StartV5(t, []byte{packets.Connack << 4, 3, 0, 0, 0}, func(_ int, c net.Conn, r *bufio.Reader) {
		var out []byte // PUBACKs not written yet (closeAfter)
		for {
			typ, flags, _, body, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
			if err != nil {
				return
			}
			switch typ {
			case packets.Pingreq:
				if _, err := c.Write([]byte{packets.Pingresp << 4, 0}); err != nil {
					return
				}
			case packets.Publish:
				_, id, payload, _, err := mqttc.ParsePublish(flags, body, true)
				if err != nil {
					return
				}
				var v struct {
					ID   string `json:"_id"`
					Kind string `json:"kind"`
				}
				_ = json.Unmarshal(payload, &v)
				rc := b.code(v.Kind)
				b.mu.Lock()
				if rc == 0 {
					b.accepted[v.ID]++
				} else {
					b.refused[v.ID]++
				}
				b.mu.Unlock()
				// PUBACK: id, reason code, properties: reason string "by script"
				ack := []byte{packets.Puback << 4, 4, byte(id >> 8), byte(id), rc, 0}
				if rc != 0 {
					ack = []byte{packets.Puback << 4, 16, byte(id >> 8), byte(id), rc, 12, 0x1F, 0, 9, 'b', 'y', ' ', 's', 'c', 'r', 'i', 'p', 't'}
				}
				if !b.closeAfter {
					if _, err := c.Write(ack); err != nil {
						return
					}
					continue
				}
				out = append(out, ack...)
				if r.Buffered() > 0 {
					if rc != 0 {
						_ = c.(*net.TCPConn).SetLinger(0) // a reset: out is lost
						return
					}
					continue // more read: handled before out is written
				}
				if _, err := c.Write(out); err != nil || rc != 0 {
					return
				}
				out = out[:0]
			}
		}
	})
	return b
}

// counts returns how many times each _id was accepted and refused.
func (b *refusingBroker) counts() (accepted, refused map[string]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.accepted), maps.Clone(b.refused)
}

// refusalRun is a pipeline from a script source through the MQTT sink
// (MQTT 5, configured by extra) to the scripted broker, with a recording
// dead-letter sink.
type refusalRun struct {
	p    *runner.Pipeline
	dead *agenttest.RecordingSink
	logs *agenttest.LogBuffer
	done chan error
	ctx  context.Context
}

// kindBatches makes batches of n records each whose field "kind" is kinds[i]
// for record i (counted over all batches), "ok" if kinds has none; the
// sink's topic is out/{kind}.
func kindBatches(batches, n int, kinds map[int]string) [][]agent.Record {
	out := make([][]agent.Record, batches)
	for b := range out {
		out[b] = make([]agent.Record, n)
		for j := range out[b] {
			i := b*n + j
			kind := kinds[i]
			if kind == "" {
				kind = "ok"
			}
			out[b][j] = agent.Record{Key: "k", Fields: []agent.Field{agent.Int("i", int64(i)), agent.String("kind", kind)}}
		}
	}
	return out
}

func runRefusal(t *testing.T, broker string, extra string, batches [][]agent.Record) *refusalRun {
	t.Helper()
	return runRefusalTopic(t, broker, "out/{kind}", `, protocol_version: "5"`+extra, batches)
}

// runRefusalTopic is runRefusal with the sink's topic and the rest of its
// config.
func runRefusalTopic(t *testing.T, broker, topic, extra string, batches [][]agent.Record) *refusalRun {
	t.Helper()
	src := agenttest.NewScriptSource(batches...)
	rr := &refusalRun{dead: &agenttest.RecordingSink{}, logs: &agenttest.LogBuffer{}, done: make(chan error, 1)}
	reg := runner.NewRegistry()
	none := func() *struct{} { return &struct{}{} }
	reg.Sources["script"] = agent.Typed[agent.Source]("test", none, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["rec"] = agent.Typed[agent.Sink]("test", none, func(*struct{}, agent.Env) (agent.Sink, error) { return rr.dead, nil })
	reg.Sinks["mqtt"] = Factory()
	yaml := "sources: [{script: {}}]\nsinks:\n  - mqtt: {broker: '" + broker + "', topic: '" + topic + "', write_timeout: 10s" + extra + "}\n    retry: {initial: 20ms, max: 200ms}\n    batch: {max_records: 10}\ndead_letter: {rec: {}}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	logger := rr.logs.Logger(slog.LevelDebug)
	rr.p, err = runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	rr.ctx = ctx
	go func() { rr.done <- rr.p.Run(ctx) }()
	return rr
}

// wait waits for the pipeline to drain the script source and end.
func (rr *refusalRun) wait(t *testing.T) {
	t.Helper()
	if err := <-rr.done; err != nil || rr.ctx.Err() != nil {
		t.Fatalf("run: %v, the pipeline did not drain within 30s (%v); sink %+v; logs:\n%s", err, rr.ctx.Err(), rr.p.Status().Sinks[0], rr.logs.String())
	}
}

// deadReasons returns each dead letter's record index and reason.
func (rr *refusalRun) deadReasons() map[int64]string {
	out := map[int64]string{}
	for _, r := range rr.dead.Records() {
		var i int64 = -1
		var reason string
		for _, f := range r.Fields {
			switch f.Name {
			case "i":
				i = f.Int
			case runner.DeadErrorField:
				reason = f.Str
			}
		}
		out[i] = reason
	}
	return out
}

// checkDelivered checks that the broker accepted every record of total
// but the refused ones exactly once, counted by payload (_id), but for
// those resent allows (their PUBACK lost), and that the sink's status
// counts them so.
func checkDelivered(t *testing.T, b *refusingBroker, rr *refusalRun, total, refused int, resent func(id string) bool) {
	t.Helper()
	accepted, _ := b.counts()
	dups := 0
	for id, n := range accepted {
		if resent == nil || !resent(id) {
			dups += n - 1
		}
	}
	if lost := total - refused - len(accepted); lost != 0 || dups != 0 {
		t.Errorf("got %d records accepted: lost %d, duplicates %d; want %d, each once", len(accepted), lost, dups, total-refused)
	}
	st := rr.p.Status().Sinks[0]
	if st.Records != uint64(total-refused) || st.Rejected != uint64(refused) {
		t.Errorf("got sink status records %d, rejected %d; want %d, %d", st.Records, st.Rejected, total-refused, refused)
	}
}

// TestPubackRefusedForGood sends a record the broker refuses for good,
// per message (0x90 topic name invalid, 0x95 packet too large, 0x99
// payload format invalid, and 0x87 not authorized with unauthorized:
// dead_letter), in the middle of a stream: it goes to the dead letters
// with the reason code and the broker's reason string, every other
// record of its batch and of the stream is delivered once, and the
// pipeline goes on (before, the batch was retried for ever). The same
// holds when the broker closes the connection after the refusal and
// loses the PUBACKs it owed, as mosquitto does: the retry sends neither
// what the broker took nor the refused record again, and starts slow, so
// that the refusal comes through (before, it was lost on every retry).
func TestPubackRefusedForGood(t *testing.T) {
	for _, tc := range []struct {
		code  byte
		name  string
		extra string
		close bool // the broker closes the connection after the refusal
	}{
		{0x90, "topic name invalid", "", false},
		{0x95, "packet too large", "", false},
		{0x99, "payload format invalid", "", false},
		{0x87, "not authorized", ", unauthorized: dead_letter", false},
		{0x95, "packet too large", "", true},
	} {
		name := fmt.Sprintf("%#x", tc.code)
		if tc.close {
			name += "/then-close"
		}
		t.Run(name, func(t *testing.T) {
			b := startRefusing(t, tc.close, func(kind string) byte {
				if kind == "bad" {
					return tc.code
				}
				return 0
			})
			const total = 40
			rr := runRefusal(t, b.URL(), tc.extra, kindBatches(4, 10, map[int]string{15: "bad"}))
			rr.wait(t)
			dead := rr.deadReasons()
			want := fmt.Sprintf("PUBACK reason code %#x (%s): by script", tc.code, tc.name)
			if len(dead) != 1 || !strings.Contains(dead[15], want) {
				t.Errorf("got dead letters %v, want record 15 only, its reason naming %q", dead, want)
			}
			// A broker that closes the connection after a refusal loses
			// the PUBACKs of the messages it read with the refused one:
			// those of its batch (records 10-19, p:11 to p:20) may come
			// twice.
			var resent func(string) bool
			if tc.close {
				resent = func(id string) bool {
					seq, _ := strconv.Atoi(strings.TrimPrefix(id, "p:"))
					return seq >= 11 && seq <= 20
				}
			}
			checkDelivered(t, b, rr, total, 1, resent)
			if n := rr.logs.Count("sink offline"); n != 0 && !tc.close {
				t.Errorf("got %d offline WARNs, want none: a refusal for good is no outage\n%s", n, rr.logs.String())
			}
		})
	}
}

// TestPubackRefusedForNow sends a record the broker refuses for now (0x87
// not authorized by default, 0x97 quota exceeded, 0x80 unspecified, 0x83
// implementation specific): the sink shows offline with the reason code
// in last_error (one WARN), the batch is retried until the broker takes
// the record, nothing goes to the dead letters, and the batch's other
// records are delivered once: a retry sends only what the broker has not
// accepted yet.
func TestPubackRefusedForNow(t *testing.T) {
	for _, tc := range []struct {
		code byte
		name string
	}{{0x87, "not authorized"}, {0x97, "quota exceeded"}, {0x80, "unspecified error"}, {0x83, "implementation specific error"}} {
		t.Run(fmt.Sprintf("%#x", tc.code), func(t *testing.T) {
			var fixed atomic.Bool
			b := startRefusing(t, false, func(kind string) byte {
				if kind == "bad" && !fixed.Load() {
					return tc.code
				}
				return 0
			})
			const total = 40
			rr := runRefusal(t, b.URL(), "", kindBatches(4, 10, map[int]string{15: "bad"}))
			sink := func() runner.SinkStatus { return rr.p.Status().Sinks[0] }
			want := fmt.Sprintf("PUBACK reason code %#x (%s): by script", tc.code, tc.name)
			agenttest.Eventually(t, 20*time.Second, "the sink offline, naming the reason code", func() bool {
				st := sink()
				return !st.Online && strings.Contains(st.LastError, want) && strings.Contains(rr.p.Status().LastError, want)
			}, nil)
			// Refused again on a retry or two more, then the operator
			// fixes it.
			agenttest.Eventually(t, 20*time.Second, "the record refused 3 times", func() bool {
				_, refused := b.counts()
				for _, n := range refused {
					return n >= 3
				}
				return false
			}, nil)
			fixed.Store(true)
			rr.wait(t)
			if dead := rr.deadReasons(); len(dead) != 0 {
				t.Errorf("got dead letters %v, want none", dead)
			}
			checkDelivered(t, b, rr, total, 0, nil)
			if st := sink(); !st.Online || st.LastError != "" || rr.p.Status().LastError != "" {
				t.Errorf("after the fix: got %+v, pipeline last_error %q; want online, cleared", st, rr.p.Status().LastError)
			}
			if n := rr.logs.Count("sink offline"); n != 1 {
				t.Errorf("got %d offline WARNs, want 1 for the episode\n%s", n, rr.logs.String())
			}
		})
	}
}

// TestMosquittoRefusals has a real mosquitto (2.0.11, MQTT 5) refuse
// messages: its ACL answers a publish to a topic it does not allow with
// PUBACK 0x87 and a message over its message_size_limit with 0x95 (and
// then closes the connection), and its max_packet_size is announced in
// the CONNACK, so that the sink does not send a larger message. The
// oversized records go to the dead letters, named, with unauthorized:
// dead_letter the one the ACL refuses too, and every other record
// arrives once (but for those of the refused record's batch whose PUBACK
// mosquitto dropped when it closed the connection); by default the refused record is retried, the sink
// offline with the reason, until the ACL allows it (a reload).
func TestMosquittoRefusals(t *testing.T) {
	for _, mode := range []string{"dead_letter", "retry"} {
		t.Run(mode, func(t *testing.T) {
			acl := filepath.Join(t.TempDir(), "acl")
			if err := os.WriteFile(acl, []byte("topic readwrite out/ok\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			m := testbroker.Start(t, testbroker.Options{Extra: "acl_file " + acl + "\nmax_packet_size 1000\nmessage_size_limit 300\n"})
			sub := subscribe(t, m.URL(), "out/#", nil)
			const total = 40
			batches := kindBatches(4, 10, map[int]string{15: "secret"})
			batches[2][3].Fields = append(batches[2][3].Fields, agent.String("blob", strings.Repeat("x", 1200))) // record 23
			batches[3][3].Fields = append(batches[3][3].Fields, agent.String("blob", strings.Repeat("x", 400)))  // record 33
			extra := ", unauthorized: " + mode
			rr := runRefusal(t, m.URL(), extra, batches)
			refused := 3
			if mode == "retry" {
				refused = 2
				sink := func() runner.SinkStatus { return rr.p.Status().Sinks[0] }
				// mosquitto closes the connection after each refusal: the
				// reason code is in last_error (logged at DEBUG, the
				// episode's WARN naming the first loss) until the next
				// attempt finds the connection gone.
				agenttest.Eventually(t, 20*time.Second, "the sink offline, naming 0x87", func() bool {
					return !sink().Online && rr.logs.Count("sink still offline", "PUBACK reason code 0x87 (not authorized)") > 0
				}, rr.logs)
				if err := os.WriteFile(acl, []byte("topic readwrite out/#\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				m.Reload()
			}
			rr.wait(t)
			dead := rr.deadReasons()
			wantDead := map[int64]string{
				23: "over the broker's Maximum Packet Size 1000 (CONNACK)",
				33: `publish to "out/ok": mqtt: PUBACK reason code 0x95 (packet too large)`,
			}
			if mode == "dead_letter" {
				wantDead[15] = `publish to "out/secret": mqtt: PUBACK reason code 0x87 (not authorized)`
			}
			if len(dead) != len(wantDead) {
				t.Errorf("got dead letters %v, want %v", dead, wantDead)
			}
			for i, want := range wantDead {
				if !strings.Contains(dead[i], want) {
					t.Errorf("dead letter of record %d: got %q, want it naming %q", i, dead[i], want)
				}
			}
			if got := sub.wait(t, total-refused, 10*time.Second); got != total-refused {
				t.Errorf("got %d distinct records, want %d", got, total-refused)
			}
			// mosquitto closes the connection after its 0x87 or 0x95
			// without sending the PUBACKs it owed for the messages it took
			// before: those (of the refused records' batches, records 10-19
			// and 30-39, IDs p:11 to p:20 and p:31 to p:40) are sent again,
			// with the same _id. The others arrive once.
			sub.mu.Lock()
			for id, n := range sub.ids {
				seq, _ := strconv.Atoi(strings.TrimPrefix(id, "p:"))
				if n != 1 && (seq < 11 || seq > 20) && (seq < 31 || seq > 40) {
					t.Errorf("record %s arrived %d times, want once", id, n)
				}
			}
			sub.mu.Unlock()
			if st := rr.p.Status().Sinks[0]; st.Records != uint64(total-refused) || st.Rejected != uint64(refused) || !st.Online {
				t.Errorf("got sink status %+v, want %d records, %d rejected, online", st, total-refused, refused)
			}
		})
	}
}

// TestInvalidTopicName makes the topic template give a record a topic
// name MQTT does not allow (a wildcard, from a field's value; an empty
// one): the sink refuses it itself, before a real mosquitto would close
// the connection on it (3.1.1 and 5 alike), so the record goes to the
// dead letters, named, and every other record arrives once.
func TestInvalidTopicName(t *testing.T) {
	for _, v := range []string{"3.1.1", "5"} {
		t.Run("v"+v, func(t *testing.T) {
			m := testbroker.Start(t, testbroker.Options{})
			sub := subscribe(t, m.URL(), "#", nil)
			const total = 40
			batches := kindBatches(4, 10, map[int]string{15: "a/#", 25: "+"})
			batches[0][3].Fields[1].Str = "" // record 3: an empty topic name
			rr := runRefusalTopic(t, m.URL(), "{kind}", `, protocol_version: "`+v+`"`, batches)
			rr.wait(t)
			dead := rr.deadReasons()
			want := map[int64]string{3: `topic "": empty`, 15: `topic "a/#": a wildcard`, 25: `topic "+": a wildcard`}
			if len(dead) != len(want) {
				t.Errorf("got dead letters %v, want %v", dead, want)
			}
			for i, w := range want {
				if !strings.Contains(dead[i], w) {
					t.Errorf("dead letter of record %d: got %q, want it naming %q", i, dead[i], w)
				}
			}
			if got := sub.wait(t, total-len(want), 10*time.Second); got != total-len(want) {
				t.Errorf("got %d distinct records, want %d", got, total-len(want))
			}
			sub.mu.Lock()
			for id, n := range sub.ids {
				if n != 1 {
					t.Errorf("record %s arrived %d times, want once", id, n)
				}
			}
			sub.mu.Unlock()
		})
	}
}
