package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/wait"
)

type fakeMsg struct {
	topic   string
	payload []byte
	qos     byte
	acks    atomic.Int32
}

func (m *fakeMsg) Topic() string   { return m.topic }
func (m *fakeMsg) Payload() []byte { return m.payload }
func (m *fakeMsg) Qos() byte       { return m.qos }
func (m *fakeMsg) Ack()            { m.acks.Add(1) }

func (m *fakeMsg) UserProperty(string) (string, bool) { return "", false }

// fakeBroker records what the source asks of it; tests push messages
// through its handlers.
type fakeBroker struct {
	h        handlers
	mu       sync.Mutex
	subs     map[string]byte
	pubs     []string
	disconns int
	nsubs    int   // SUBSCRIBEs asked for
	subErr   error // what Subscribe returns; nil: granted
}

func (f *fakeBroker) Connect(context.Context) (bool, error) { f.h.connected(); return false, nil }
func (f *fakeBroker) Subscribe(_ context.Context, fl map[string]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nsubs++
	if f.subErr != nil {
		return f.subErr
	}
	f.subs = fl
	return nil
}
func (f *fakeBroker) Publish(_ context.Context, topic string, _ byte, _ bool, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pubs = append(f.pubs, topic+"="+string(p))
	return nil
}
func (f *fakeBroker) Disconnect(time.Duration) { f.mu.Lock(); f.disconns++; f.mu.Unlock() }

type fakeDialer struct {
	mu    sync.Mutex
	dials []*fakeBroker
}

func (d *fakeDialer) dial(_ *Config, _ string, _ *tls.Config, h handlers) broker {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &fakeBroker{h: h}
	d.dials = append(d.dials, b)
	return b
}

func (d *fakeDialer) last() *fakeBroker {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[len(d.dials)-1]
}

func testConfig() Config {
	c := *Defaults()
	c.Brokers = []string{"tcp://127.0.0.1:1"}
	c.Subscriptions = []Subscription{{Topic: "sensors/#", QoS: 1}}
	return c
}

func newFake(t *testing.T, cfg Config) (*Source, *fakeDialer, *runner.Metrics) {
	t.Helper()
	d := &fakeDialer{}
	m := runner.NewMetrics()
	s, err := newSource(cfg, agent.Env{Pipeline: "p", Component: "mqtt", Metrics: m, AgentName: "a"}, d.dial)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := s.Connect(context.Background()); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, d, m
}

func metricLine(m *runner.Metrics, name string) string {
	var b strings.Builder
	m.WritePrometheus(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, name) {
			return l
		}
	}
	return ""
}

func TestFakeInFlightBoundAndAck(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 3
	cfg.BatchSize = 2
	cfg.Linger = 0
	s, d, _ := newFake(t, cfg)
	b := d.last()
	msgs := make([]*fakeMsg, 5)
	delivered := make(chan int, 5)
	go func() {
		for i := range msgs {
			msgs[i] = &fakeMsg{topic: "sensors/x", payload: []byte{byte('0' + i)}, qos: 1}
			b.h.message(msgs[i], nil)
			delivered <- i
		}
	}()
	for range 3 {
		<-delivered
	}
	select {
	case i := <-delivered:
		t.Fatalf("message %d was taken beyond max_in_flight=3", i)
	case <-time.After(50 * time.Millisecond):
	}
	ctx := context.Background()
	recs, ack, err := s.Read(ctx)
	if err != nil || len(recs) != 2 {
		t.Fatalf("got %d records, err %v; want 2, nil", len(recs), err)
	}
	if msgs[0].acks.Load() != 0 {
		t.Fatalf("PUBACK before the batch was acked")
	}
	ack(ctx, nil)
	ack(ctx, nil) // a second call is ignored
	if msgs[0].acks.Load() != 1 || msgs[1].acks.Load() != 1 {
		t.Fatalf("got acks %d,%d, want 1,1", msgs[0].acks.Load(), msgs[1].acks.Load())
	}
	for range 2 {
		select {
		case <-delivered:
		case <-time.After(2 * time.Second):
			t.Fatalf("handler still blocked after the ack freed slots")
		}
	}
}

// TestFakeAppendedReleasesQoS0 checks that once the runner has appended a
// batch, its QoS 0 messages leave max_in_flight (the broker never sends them
// again) while its QoS 1 messages stay counted until the ack PUBACKs them;
// a nack after that counts the QoS 0 ones as dropped and reconnects for the
// QoS 1 ones.
func TestFakeAppendedReleasesQoS0(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 4
	cfg.BatchSize = 4
	cfg.Linger = 0
	s, d, m := newFake(t, cfg)
	b := d.last()
	ctx := context.Background()
	inFlight := func() string { return strings.Fields(metricLine(m, "pspf_mqtt_in_flight"))[1] }

	// A mixed batch: two QoS 0, one QoS 1, one QoS 0.
	qos := []byte{0, 0, 1, 0}
	msgs := make([]*fakeMsg, len(qos))
	for i, q := range qos {
		msgs[i] = &fakeMsg{topic: "sensors/x", payload: []byte{byte('a' + i)}, qos: q}
		b.h.message(msgs[i], nil)
	}
	recs, ack, err := s.Read(ctx)
	if err != nil || len(recs) != 4 {
		t.Fatalf("got %d records, err %v; want 4, nil", len(recs), err)
	}
	if got := inFlight(); got != "4" {
		t.Fatalf("in flight before Appended: %s, want 4", got)
	}
	s.Appended()
	if got := inFlight(); got != "1" {
		t.Fatalf("in flight after Appended: %s, want 1 (the QoS 1 message)", got)
	}
	// Three slots are free again: three more messages are taken at once.
	more := make(chan struct{})
	go func() {
		for range 3 {
			b.h.message(&fakeMsg{topic: "sensors/y", payload: []byte("z"), qos: 0}, nil)
		}
		close(more)
	}()
	select {
	case <-more:
	case <-time.After(2 * time.Second):
		t.Fatal("handler blocked although Appended freed three slots")
	}
	ack(ctx, nil)
	if got := msgs[2].acks.Load(); got != 1 {
		t.Fatalf("QoS 1 message got %d PUBACKs, want 1", got)
	}
	if l := metricLine(m, "pspf_mqtt_acked_total"); !strings.HasSuffix(l, " 4") {
		t.Errorf("got %q, want 4 acked", l)
	}
	if got := inFlight(); got != "3" {
		t.Fatalf("in flight after the ack: %s, want 3 (the queued ones)", got)
	}

	// The queued QoS 0 batch, appended, then nacked: 3 dropped, no reconnect.
	_, ack, err = s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Appended()
	ack(ctx, errors.New("fsync failed"))
	if l := metricLine(m, `pspf_mqtt_dropped_total{pipeline="p",component="mqtt",reason="qos0_nacked"}`); !strings.HasSuffix(l, " 3") {
		t.Errorf("got %q, want 3 QoS 0 messages dropped", l)
	}
	if s.reconnect.Load() {
		t.Error("a nack of QoS 0 messages only asked for a reconnect")
	}
	if got := inFlight(); got != "0" {
		t.Fatalf("in flight at the end: %s, want 0", got)
	}
}

func TestFakeNackReconnectsWithoutPuback(t *testing.T) {
	cfg := testConfig()
	cfg.Linger = 0
	s, d, m := newFake(t, cfg)
	msg := &fakeMsg{topic: "sensors/x", payload: []byte("v"), qos: 1}
	d.last().h.message(msg, nil)
	ctx := context.Background()
	_, ack, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ack(ctx, errors.New("disk full"))
	if got := msg.acks.Load(); got != 0 {
		t.Fatalf("got %d PUBACKs after a nack, want 0", got)
	}
	first := d.last()
	go func() { // the next Read reconnects, then waits for a message
		if wait.Until(5*time.Second, func() bool { return d.last() != first }) {
			d.last().h.message(&fakeMsg{topic: "sensors/x", payload: []byte("v"), qos: 1}, nil)
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, ack, err = s.Read(rctx); err != nil {
		t.Fatalf("read after nack: %v", err)
	}
	ack(ctx, nil)
	if first.disconns != 1 || len(d.dials) != 2 {
		t.Errorf("got %d disconnects and %d dials, want 1 and 2", first.disconns, len(d.dials))
	}
	if l := metricLine(m, "pspf_mqtt_nacked_total"); !strings.HasSuffix(l, " 1") {
		t.Errorf("got %q, want 1 nacked", l)
	}
}

func TestFakeOversizeTemplateAndStatus(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPayload = 4
	cfg.TopicTemplate = "sensors/{site}/{device}/temp"
	cfg.Key = "{site}/{device}"
	cfg.TopicField = "topic"
	cfg.Status.Topic = "agents/{agent}/status"
	s, d, m := newFake(t, cfg)
	b := d.last()
	b.h.oversize() // the client dropped one (see TestClientReceiveAckAndRequests)
	b.h.message(&fakeMsg{topic: "sensors/a/b/temp", payload: []byte("\xff\x00"), qos: 1}, nil)
	b.h.message(&fakeMsg{topic: "other", payload: []byte("1"), qos: 0}, nil)
	recs, ack, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ack(context.Background(), nil)
	if l := metricLine(m, `pspf_mqtt_dropped_total{pipeline="p",component="mqtt",reason="oversize"}`); !strings.HasSuffix(l, " 1") {
		t.Errorf("got %q, want oversize 1", l)
	}
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	r := recs[0]
	if r.Key != "a/b" || string(r.Raw) != "\xff\x00" || r.Field("site").Str != "a" || r.Field("device").Str != "b" || r.Field("topic").Str != "sensors/a/b/temp" {
		t.Errorf("got %+v, want key a/b, raw payload and fields site, device, topic", r)
	}
	if r2 := recs[1]; r2.Key != "" || len(r2.Fields) != 1 || r2.Field("topic").Str != "other" {
		t.Errorf("mismatching topic: got %+v, want only the topic field", r2)
	}
	if l := metricLine(m, "pspf_mqtt_template_mismatch_total"); !strings.HasSuffix(l, " 1") {
		t.Errorf("got %q, want 1 mismatch", l)
	}
	_ = s.Close(context.Background())
	if got := strings.Join(b.pubs, ","); got != "agents/a/status=online,agents/a/status=offline" {
		t.Errorf("got status messages %q, want online then offline", got)
	}
}

func TestFakeCloseUnblocksHandler(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 1
	s, d, _ := newFake(t, cfg)
	b := d.last()
	b.h.message(&fakeMsg{topic: "sensors/1", qos: 1}, nil)
	done := make(chan struct{})
	go func() { b.h.message(&fakeMsg{topic: "sensors/2", qos: 1}, nil); close(done) }()
	_ = s.Close(context.Background())
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("handler still blocked after Close")
	}
}

// TestFakeBatchReuse: once a batch is acked its slices serve the next batch,
// cleared of the old messages, and each record gets its own template fields.
func TestFakeBatchReuse(t *testing.T) {
	cfg := testConfig()
	cfg.BatchSize = 2
	cfg.Linger = 0
	cfg.TopicTemplate = "sensors/{device}"
	cfg.Key = "{device}"
	s, d, _ := newFake(t, cfg)
	b := d.last()
	ctx := context.Background()
	read := func(devices ...string) ([]agent.Record, agent.AckFunc) {
		t.Helper()
		for _, dev := range devices {
			b.h.message(&fakeMsg{topic: "sensors/" + dev, payload: []byte(dev), qos: 1}, nil)
		}
		recs, ack, err := s.Read(ctx)
		if err != nil || len(recs) != len(devices) {
			t.Fatalf("got %d records, err %v; want %d, nil", len(recs), err, len(devices))
		}
		for i, r := range recs {
			if r.Key != devices[i] || string(r.Raw) != devices[i] || len(r.Fields) != 1 || r.Fields[0].Str != devices[i] {
				t.Errorf("record %d: got key %q raw %q fields %+v, want device %s", i, r.Key, r.Raw, r.Fields, devices[i])
			}
		}
		return recs, ack
	}
	first, ack := read("a", "b")
	ack(ctx, nil)
	if first[0].Key != "" || first[0].Raw != nil || first[0].Fields != nil {
		t.Errorf("acked record not cleared: got %+v", first[0])
	}
	second, ack2 := read("c")
	if &second[0] != &first[0] {
		t.Errorf("the acked batch's records were not reused")
	}
	third, ack3 := read("d", "e") // the second batch is not acked: fresh slices
	if &third[0] == &second[0] {
		t.Errorf("an unacked batch's records were reused")
	}
	ack2(ctx, nil)
	ack3(ctx, nil)
}

// TestFakeBatchFillsBeforeLinger: a batch that reaches batch_size is
// returned at once, not after linger; a short one after linger, with what
// came meanwhile. It runs in a synctest bubble: the linger runs on the
// bubble's clock, so the times checked are exact.
func TestFakeBatchFillsBeforeLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.BatchSize = 3
		cfg.Linger = 300 * time.Millisecond
		s, d, _ := newFake(t, cfg)
		b := d.last()
		ctx := context.Background()
		send := func(n int) {
			for range n {
				b.h.message(&fakeMsg{topic: "sensors/x", payload: []byte("1"), qos: 1}, nil)
			}
		}
		type result struct {
			n   int
			ack agent.AckFunc
			err error
		}
		read := func() <-chan result {
			ch := make(chan result, 1)
			go func() {
				recs, ack, err := s.Read(ctx)
				ch <- result{len(recs), ack, err}
			}()
			return ch
		}
		ch := read()
		send(1)
		synctest.Wait() // Read holds the first and lingers
		select {
		case r := <-ch:
			t.Fatalf("Read returned %d records before linger or a full batch", r.n)
		default:
		}
		start := time.Now()
		send(2)
		r := <-ch
		if r.err != nil || r.n != 3 {
			t.Fatalf("got %d records, err %v; want 3, nil", r.n, r.err)
		}
		if el := time.Since(start); el != 0 {
			t.Errorf("full batch returned after %v, want at once, not after linger (300ms)", el)
		}
		r.ack(ctx, nil)
		send(2)
		start = time.Now()
		r = <-read()
		if r.err != nil || r.n != 2 {
			t.Fatalf("got %d records, err %v; want 2, nil", r.n, r.err)
		}
		if el := time.Since(start); el != cfg.Linger {
			t.Errorf("short batch returned after %v, want after linger (300ms)", el)
		}
		r.ack(ctx, nil)
	})
}

// readExact runs one s.Read, in a synctest bubble, and fails t unless it
// returns want records after exactly wait; it acks them.
func readExact(t *testing.T, s *Source, want int, wait time.Duration) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	recs, ack, err := s.Read(ctx)
	if err != nil || len(recs) != want {
		t.Fatalf("got %d records, err %v; want %d, nil", len(recs), err, want)
	}
	if el := time.Since(start); el != wait {
		t.Errorf("Read returned after %v, want %v", el, wait)
	}
	ack(ctx, nil)
}

// TestFakeSparseMessagesDoNotLinger: a message that comes more than linger
// after the one before it, itself alone in its batch, is returned at once,
// without arming the linger timer (the next is not expected within linger
// either); once messages come closer together than linger, batches linger
// again. The first message after start lingers, and so does the first
// after a gap that follows a batch of several (a stall of a fast stream:
// the broker waiting for PUBACKs). It runs in a synctest bubble, so the
// times checked are exact.
func TestFakeSparseMessagesDoNotLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.BatchSize = 10
		cfg.Linger = 300 * time.Millisecond
		s, d, _ := newFake(t, cfg)
		b := d.last()
		send := func() { b.h.message(&fakeMsg{topic: "sensors/x", payload: []byte("1"), qos: 1}, nil) }
		read := func(want int, wait time.Duration) { t.Helper(); readExact(t, s, want, wait) }
		send()
		read(1, cfg.Linger) // the first message lingers
		for range 3 {       // one message a second: no linger
			time.Sleep(time.Second)
			send()
			read(1, 0)
		}
		time.Sleep(100 * time.Millisecond) // closer than linger: it lingers again
		send()
		go func() {
			time.Sleep(100 * time.Millisecond)
			send()
		}()
		read(2, cfg.Linger)
		send() // a burst: the first of it lingers for the rest
		send()
		read(2, cfg.Linger)
		time.Sleep(time.Second) // a stall after a batch of several: it lingers
		send()
		read(1, cfg.Linger)
		time.Sleep(time.Second) // now sparse after a batch of one
		send()
		read(1, 0)
	})
}

// BenchmarkFakeReadAck is the source's own cost per message, without a
// broker: a goroutine hands messages to the handler as paho's router does,
// Read takes them in batches and the ack releases them.
//
//	go test -run '^$' -bench FakeReadAck -benchmem ./sources/mqtt
func BenchmarkFakeReadAck(b *testing.B) {
	cfg := testConfig()
	cfg.TopicTemplate = "sensors/{device}/temp"
	cfg.Key = "{device}"
	d := &fakeDialer{}
	s, err := newSource(cfg, agent.Env{Pipeline: "p", Component: "mqtt", Metrics: runner.NewMetrics(), AgentName: "a"}, d.dial)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close(ctx) }()
	h := d.last().h
	msgs := make([]fakeMsg, 100)
	for i := range msgs {
		msgs[i] = fakeMsg{topic: "sensors/d" + strings.Repeat("x", i%7) + "/temp", payload: []byte(`{"temp":21.5}`), qos: 1}
	}
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for i := range b.N {
			h.message(&msgs[i%len(msgs)], nil)
		}
	}()
	for n := 0; n < b.N; {
		recs, ack, err := s.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n += len(recs)
		ack(ctx, nil)
	}
}

// TestFakeInFlightByteBudget checks max_in_flight_bytes: messages are taken
// while their payloads and topics fit the budget, the handler blocks on the
// one that would pass it until an ack frees room, the episode is counted
// once however many messages wait in it, and a message larger than the
// whole budget is taken alone.
func TestFakeInFlightByteBudget(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 100
	cfg.MaxInFlightBytes = 1000
	cfg.BatchSize = 100
	cfg.Linger = 0
	s, d, m := newFake(t, cfg)
	b := d.last()
	ctx := context.Background()
	gauge := func(name string) string { return strings.Fields(metricLine(m, name))[1] }

	// Topic "t" (1 byte) and 299 payload bytes: 300 each, three fit.
	sizes := []int{299, 299, 299, 299, 1999}
	delivered := make(chan int, len(sizes))
	go func() {
		for i, n := range sizes {
			b.h.message(&fakeMsg{topic: "t", payload: make([]byte, n), qos: 1}, nil)
			delivered <- i
		}
	}()
	for range 3 {
		<-delivered
	}
	select {
	case i := <-delivered:
		t.Fatalf("message %d was taken beyond max_in_flight_bytes=1000", i)
	case <-time.After(50 * time.Millisecond):
	}
	if got := gauge("pspf_mqtt_in_flight_bytes"); got != "900" {
		t.Errorf("pspf_mqtt_in_flight_bytes = %s, want 900", got)
	}
	if got := metricLine(m, `pspf_mqtt_in_flight_full_total{pipeline="p",component="mqtt",bound="bytes"}`); !strings.HasSuffix(got, " 1") {
		t.Errorf("got %q, want one bytes episode", got)
	}
	recs, ack, err := s.Read(ctx)
	if err != nil || len(recs) != 3 {
		t.Fatalf("got %d records, err %v; want 3, nil", len(recs), err)
	}
	ack(ctx, nil)
	if i := <-delivered; i != 3 {
		t.Fatalf("got message %d, want 3", i)
	}
	// 2000 bytes: more than the budget; it waits until it is alone.
	select {
	case i := <-delivered:
		t.Fatalf("message %d was taken while 300 bytes were in flight", i)
	case <-time.After(50 * time.Millisecond):
	}
	recs, ack, err = s.Read(ctx)
	if err != nil || len(recs) != 1 {
		t.Fatalf("got %d records, err %v; want 1, nil", len(recs), err)
	}
	ack(ctx, nil)
	select {
	case <-delivered:
	case <-time.After(2 * time.Second):
		t.Fatal("a message larger than the budget was never taken alone")
	}
	if got := gauge("pspf_mqtt_in_flight_bytes"); got != "2000" {
		t.Errorf("pspf_mqtt_in_flight_bytes = %s, want 2000", got)
	}
	recs, ack, err = s.Read(ctx)
	if err != nil || len(recs) != 1 {
		t.Fatalf("got %d records, err %v; want 1, nil", len(recs), err)
	}
	ack(ctx, nil)
	if got := gauge("pspf_mqtt_in_flight_bytes"); got != "0" {
		t.Errorf("pspf_mqtt_in_flight_bytes after the last ack = %s, want 0", got)
	}
	// Every message since the first that waited had to wait: one episode.
	if got := metricLine(m, `pspf_mqtt_in_flight_full_total{pipeline="p",component="mqtt",bound="bytes"}`); !strings.HasSuffix(got, " 1") {
		t.Errorf("got %q, want still one bytes episode", got)
	}
}

// TestFakeDrainedEndsLinger: when the client reports that it has handed
// over all it read and pauses before its next read (a paced client, MQTT
// 5), a batch is complete: Read returns it at once instead of lingering,
// whether the drain came before Read took the messages or while it
// lingered; without a drain it lingers as before. In a synctest bubble,
// so the times checked are exact.
func TestFakeDrainedEndsLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.BatchSize = 10
		cfg.Linger = 300 * time.Millisecond
		s, d, _ := newFake(t, cfg)
		b := d.last()
		send := func(n int) {
			for range n {
				b.h.message(&fakeMsg{topic: "sensors/x", payload: []byte("1"), qos: 1}, nil)
			}
		}
		read := func(want int, wait time.Duration) { t.Helper(); readExact(t, s, want, wait) }
		send(3) // drained before Read runs
		b.h.drained()
		read(3, 0)
		send(2) // no drain: the batch lingers
		read(2, cfg.Linger)
		go func() { // drained while Read lingers
			send(1)
			time.Sleep(100 * time.Millisecond)
			send(1)
			b.h.drained()
		}()
		read(2, 100*time.Millisecond)
	})
}
