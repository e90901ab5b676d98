package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

type noConfig struct{}

// harness builds a registry whose "script" source, "op" operator and "rec"
// sink are the given instances.
func harness(src agent.Source, op agent.Operator, sink agent.Sink) *runner.Registry {
	reg := runner.NewRegistry()
	none := func() *noConfig { return &noConfig{} }
	reg.Sources["script"] = agent.Typed[agent.Source]("test", none, func(*noConfig, agent.Env) (agent.Source, error) { return src, nil })
	reg.Operators["op"] = agent.Typed[agent.Operator]("test", none, func(*noConfig, agent.Env) (agent.Operator, error) { return op, nil })
	reg.Sinks["rec"] = agent.Typed[agent.Sink]("test", none, func(*noConfig, agent.Env) (agent.Sink, error) { return sink, nil })
	return reg
}

func batchOf(from, n int) []agent.Record {
	out := make([]agent.Record, n)
	for i := range out {
		out[i] = agent.Record{Fields: []agent.Field{agent.Int("n", int64(from+i))}}
	}
	return out
}

func runPipeline(t *testing.T, reg *runner.Registry, yaml string, timeout time.Duration) (*runner.Metrics, error) {
	t.Helper()
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: t.TempDir(), OpenLog: agenttest.Open(), ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return m, p.Run(ctx)
}

const oneOfEach = "sources: [{script: {}}]\noperators: [{op: {}}]\nsinks: [{rec: {}, retry: {initial: 1ms, max: 5ms}}]\n"

func metric(m *runner.Metrics, name string) string {
	var b strings.Builder
	m.WritePrometheus(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, name) {
			return l
		}
	}
	return ""
}

func TestPipelineDeliversAndAcks(t *testing.T) {
	src := agenttest.NewScriptSource(batchOf(0, 10), batchOf(10, 5), batchOf(15, 7))
	sink := &agenttest.RecordingSink{}
	double := agenttest.OperatorFunc(func(_ context.Context, b *agent.Batch) error {
		keep := b.Records[:0]
		for _, r := range b.Records {
			if r.Fields[0].Int%2 == 0 { // drop odd numbers
				keep = append(keep, r)
			}
		}
		b.Records = keep
		return nil
	})
	if _, err := runPipeline(t, harness(src, double, sink), oneOfEach, 10*time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}
	got := sink.Records()
	if len(got) != 11 {
		t.Fatalf("got %d records, want 11", len(got))
	}
	for i, r := range got {
		if r.Fields[0].Int != int64(2*i) {
			t.Errorf("record %d: got n=%d, want %d", i, r.Fields[0].Int, 2*i)
		}
		if want := fmt.Sprintf("p:%d", i+1); r.ID != want {
			t.Errorf("record %d: got ID %q, want %q", i, r.ID, want)
		}
	}
	acks := src.AckErrors()
	if len(acks) != 3 {
		t.Fatalf("got %d acks, want 3", len(acks))
	}
	for _, a := range acks {
		if a != nil {
			t.Errorf("got ack error %v, want nil", a)
		}
	}
	if !src.Closed || !sink.Closed || !sink.Flushed {
		t.Errorf("got closed source=%v sink=%v flushed=%v, want all true", src.Closed, sink.Closed, sink.Flushed)
	}
}

func TestPipelineOperatorPanicIsCountedNotFatal(t *testing.T) {
	src := agenttest.NewScriptSource(batchOf(0, 3), batchOf(3, 3), batchOf(6, 3))
	sink := &agenttest.RecordingSink{}
	calls := 0
	boom := agenttest.OperatorFunc(func(_ context.Context, b *agent.Batch) error {
		calls++
		if calls == 2 {
			var m map[string]int
			m["x"] = 1 // a nil-map write: a real panic
		}
		return nil
	})
	m, err := runPipeline(t, harness(src, boom, sink), oneOfEach, 10*time.Second)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := len(sink.Records()); got != 6 {
		t.Errorf("got %d records delivered, want 6", got)
	}
	if got := metric(m, "pspf_operator_panics_total"); !strings.HasSuffix(got, " 1") {
		t.Errorf("got %q, want a panic count of 1", got)
	}
	if got := metric(m, "pspf_dead_letters_total"); !strings.HasSuffix(got, " 3") {
		t.Errorf("got %q, want 3 dead letters", got)
	}
}

func TestPipelineRetriesThenDelivers(t *testing.T) {
	src := agenttest.NewScriptSource(batchOf(0, 4))
	sink := &agenttest.RecordingSink{Fail: func(attempt int, _ []agent.Record) error {
		if attempt <= 3 {
			return errors.New("uplink down")
		}
		return nil
	}}
	m, err := runPipeline(t, harness(src, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink), oneOfEach, 10*time.Second)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := len(sink.Records()); got != 4 {
		t.Errorf("got %d records, want 4", got)
	}
	if got := metric(m, "pspf_sink_retries_total"); !strings.HasSuffix(got, " 3") {
		t.Errorf("got %q, want 3 retries", got)
	}
}

func TestPipelineRejectedRecordsGoToDeadLetters(t *testing.T) {
	src := agenttest.NewScriptSource(batchOf(0, 5))
	sink := &agenttest.RecordingSink{Fail: func(attempt int, recs []agent.Record) error {
		if attempt == 1 {
			return &agent.RejectedError{Index: []int{1, 3}, Errs: []error{errors.New("too large"), errors.New("too large")}}
		}
		return nil
	}}
	m, err := runPipeline(t, harness(src, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink), oneOfEach, 10*time.Second)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := len(sink.Records()); got != 3 {
		t.Errorf("got %d records accepted, want 3", got)
	}
	if got := metric(m, "pspf_dead_letters_total"); !strings.HasSuffix(got, " 2") {
		t.Errorf("got %q, want 2 dead letters", got)
	}
	if got := metric(m, "pspf_sink_records_total"); !strings.HasSuffix(got, " 3") {
		t.Errorf("got %q, want 3 sink records", got)
	}
}

func TestPipelineStopsOnCancelAndDrains(t *testing.T) {
	batches := make([][]agent.Record, 200)
	for i := range batches {
		batches[i] = batchOf(i*10, 10)
	}
	src := agenttest.NewScriptSource(batches...)
	sink := &agenttest.RecordingSink{}
	slow := agenttest.OperatorFunc(func(ctx context.Context, b *agent.Batch) error {
		time.Sleep(time.Millisecond)
		return nil
	})
	_, err := runPipeline(t, harness(src, slow, sink), oneOfEach, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	acked := 0
	for _, a := range src.AckErrors() {
		if a == nil {
			acked++
		}
	}
	if got := len(sink.Records()); got != acked*10 {
		t.Errorf("got %d records delivered, want every acked one: %d", got, acked*10)
	}
	if acked == 0 || acked == len(batches) {
		t.Errorf("got %d acked batches, want a stop part-way through %d", acked, len(batches))
	}
}

// TestPipelineSomeRejectedAtIngest: an operator rejects one record of each
// batch; the others go to the log and the sink, the rejected ones to the
// dead letters.
func TestPipelineSomeRejectedAtIngest(t *testing.T) {
	src := agenttest.NewScriptSource(batchOf(0, 4), batchOf(4, 4), batchOf(8, 4))
	sink := &agenttest.RecordingSink{}
	rejectFirst := agenttest.OperatorFunc(func(_ context.Context, b *agent.Batch) error {
		b.Reject(b.Records[0], "picky", errors.New("first of its batch"))
		b.Records = b.Records[1:]
		return nil
	})
	m, err := runPipeline(t, harness(src, rejectFirst, sink), oneOfEach, 10*time.Second)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := len(sink.Records()); got != 9 {
		t.Errorf("got %d records delivered, want 9", got)
	}
	if got := metric(m, "pspf_dead_letters_total"); !strings.HasSuffix(got, " 3") {
		t.Errorf("got %q, want 3 dead letters", got)
	}
}

// appenderSource is a ScriptSource that also implements agent.Appender and
// records, for each batch, whether Appended came before its ack.
type appenderSource struct {
	*agenttest.ScriptSource
	mu       sync.Mutex
	reads    int
	last     int          // the batch Read returned last, -1 once Appended
	appended map[int]bool // batch -> Appended was called for it
	atAck    map[int]bool // batch -> Appended had been called when acked
}

func (s *appenderSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	recs, ack, err := s.ScriptSource.Read(ctx)
	if ack == nil {
		return recs, ack, err
	}
	s.mu.Lock()
	n := s.reads
	s.reads++
	s.last = n
	s.mu.Unlock()
	return recs, func(ctx context.Context, err error) {
		s.mu.Lock()
		s.atAck[n] = s.appended[n]
		s.mu.Unlock()
		ack(ctx, err)
	}, err
}

func (s *appenderSource) Appended() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last < 0 {
		s.appended[-1] = true // called twice for one batch
		return
	}
	s.appended[s.last] = true
	s.last = -1
}

// TestPipelineCallsAppendedBeforeAck checks the agent.Appender contract: a
// batch that reaches the log gets Appended after its append and before its
// ack; a batch whose records were all filtered out gets only its ack.
func TestPipelineCallsAppendedBeforeAck(t *testing.T) {
	src := &appenderSource{
		ScriptSource: agenttest.NewScriptSource(batchOf(0, 4), batchOf(100, 3), batchOf(4, 5)),
		last:         -1, appended: map[int]bool{}, atAck: map[int]bool{},
	}
	sink := &agenttest.RecordingSink{}
	below100 := agenttest.OperatorFunc(func(_ context.Context, b *agent.Batch) error {
		keep := b.Records[:0]
		for _, r := range b.Records {
			if r.Fields[0].Int < 100 {
				keep = append(keep, r)
			}
		}
		b.Records = keep
		return nil
	})
	if _, err := runPipeline(t, harness(src, below100, sink), oneOfEach, 10*time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := len(sink.Records()); got != 9 {
		t.Fatalf("got %d records, want 9", got)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	want := map[int]bool{0: true, 1: false, 2: true}
	if len(src.atAck) != 3 {
		t.Fatalf("got acks for batches %v, want 3", src.atAck)
	}
	for b, w := range want {
		if src.atAck[b] != w || src.appended[b] != w {
			t.Errorf("batch %d: Appended before ack %v, Appended at all %v; want %v", b, src.atAck[b], src.appended[b], w)
		}
	}
	if src.appended[-1] {
		t.Error("Appended was called twice for one batch")
	}
}

// syncedLog is a MemLog that remembers up to where it was synced.
type syncedLog struct {
	*agenttest.MemLog
	mu     sync.Mutex
	synced uint64
}

func (l *syncedLog) Sync(ctx context.Context, upto uint64) error {
	l.mu.Lock()
	l.synced = max(l.synced, upto)
	l.mu.Unlock()
	return l.MemLog.Sync(ctx, upto)
}

func (l *syncedLog) upto() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced
}

// ackCheckSource wraps a ScriptSource and runs check before each ack.
type ackCheckSource struct {
	*agenttest.ScriptSource
	check func(batch int)
	reads int
}

func (s *ackCheckSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	recs, ack, err := s.ScriptSource.Read(ctx)
	if ack == nil {
		return recs, ack, err
	}
	n := s.reads
	s.reads++
	return recs, func(ctx context.Context, err error) { s.check(n); ack(ctx, err) }, err
}

// TestPipelineDeadLettersDurableBeforeAck checks that a batch's dead letters
// are synced in the dead-letter log before the batch is acked, also when
// every record of the batch was rejected, and that they are synced by the
// committer (one fsync for a group) rather than one per batch on intake.
func TestPipelineDeadLettersDurableBeforeAck(t *testing.T) {
	var dead *syncedLog
	open := agenttest.Open()
	openLog := func(dir string, cfg runner.BufferConfig) (runner.Log, error) {
		l, err := open(dir, cfg)
		if err != nil || filepath.Base(dir) != "dead" {
			return l, err
		}
		dead = &syncedLog{MemLog: l.(*agenttest.MemLog)}
		return dead, nil
	}
	// Batch k has k+1 records; records >= 100 are rejected. Batch 2 is all
	// rejected.
	batches := [][]agent.Record{batchOf(0, 1), append(batchOf(1, 1), batchOf(100, 1)...), batchOf(200, 3), append(batchOf(2, 2), batchOf(300, 2)...)}
	cumDead := []uint64{0, 1, 4, 6}
	var bad []string
	src := &ackCheckSource{ScriptSource: agenttest.NewScriptSource(batches...)}
	src.check = func(b int) {
		if got := dead.upto(); got < cumDead[b] {
			bad = append(bad, fmt.Sprintf("batch %d acked with dead letters synced up to %d, want >= %d", b, got, cumDead[b]))
		}
	}
	sink := &agenttest.RecordingSink{}
	reject := agenttest.OperatorFunc(func(_ context.Context, b *agent.Batch) error {
		keep := b.Records[:0]
		for _, r := range b.Records {
			if r.Fields[0].Int >= 100 {
				b.Reject(r, "picky", errors.New("too big"))
			} else {
				keep = append(keep, r)
			}
		}
		b.Records = keep
		return nil
	})
	spec, err := harness(src, reject, sink).ParsePipeline("p.yaml", []byte(oneOfEach), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: harness(src, reject, sink), Metrics: m, DataDir: t.TempDir(), OpenLog: openLog, ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, b := range bad {
		t.Error(b)
	}
	if got := len(src.AckErrors()); got != 4 {
		t.Fatalf("got %d acks, want 4", got)
	}
	if got := len(sink.Records()); got != 4 {
		t.Errorf("got %d records delivered, want 4", got)
	}
	if got := metric(m, "pspf_dead_letters_total"); !strings.HasSuffix(got, " 6") {
		t.Errorf("got %q, want 6 dead letters", got)
	}
	if dead.Syncs > 3 {
		t.Errorf("dead-letter log synced %d times for 3 batches with dead letters, want at most 3", dead.Syncs)
	}
}

// TestPipelineReportErrorIsLastError checks that an error a component
// reports from a goroutine of its own (Env.ReportError) becomes the
// pipeline's last error, named by the component.
func TestPipelineReportErrorIsLastError(t *testing.T) {
	var env agent.Env
	reg := harness(nil, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), &agenttest.RecordingSink{})
	reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *noConfig { return &noConfig{} },
		func(_ *noConfig, e agent.Env) (agent.Source, error) {
			env = e
			return agenttest.NewScriptSource(), nil
		})
	spec, err := reg.ParsePipeline("p.yaml", []byte(oneOfEach), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open()})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	if env.ReportError == nil {
		t.Fatal("the source's Env has no ReportError")
	}
	env.ReportError(errors.New("session taken over"))
	if got, want := p.Status().LastError, env.Component+": session taken over"; got != want {
		t.Errorf("last error %q, want %q", got, want)
	}
	// Recovered: the error it reported goes.
	env.ReportError(nil)
	if got := p.Status().LastError; got != "" {
		t.Errorf("last error after ReportError(nil): %q, want none", got)
	}
}

// TestSourceFailuresAreAnEpisode: a source that keeps failing to connect
// logs one WARN, not one per attempt, has the failure as the pipeline's
// last error meanwhile, and once connected logs one INFO and clears it.
func TestSourceFailuresAreAnEpisode(t *testing.T) {
	src := &flakySource{fails: 5, ScriptSource: agenttest.NewScriptSource([]agent.Record{{Raw: []byte("x")}})}
	reg := harness(src, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), &agenttest.RecordingSink{})
	spec, err := reg.ParsePipeline("p.yaml", []byte(oneOfEach), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var logs agenttest.LogBuffer
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open(),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	agenttest.Eventually(t, 30*time.Second, "3 connect attempts of the source", func() bool { return src.attempts.Load() >= 3 }, &logs)
	if got := p.Status().LastError; !strings.Contains(got, "no broker yet") {
		t.Errorf("last error while failing: %q, want the connect error", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	out := logs.String()
	if n := strings.Count(out, "source connect failed"); n != 1 {
		t.Errorf("got %d WARN lines for 5 failed connects, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "source connected after failures") || !strings.Contains(out, "attempts=5") {
		t.Errorf("no INFO line for the end of the episode:\n%s", out)
	}
	if got := p.Status().LastError; got != "" {
		t.Errorf("last error after connecting: %q, want none", got)
	}
}

// flakySource fails its first fails connects.
type flakySource struct {
	*agenttest.ScriptSource
	fails    int64
	attempts atomic.Int64
}

func (s *flakySource) Connect(ctx context.Context) error {
	if s.attempts.Add(1) <= s.fails {
		return errors.New("no broker yet")
	}
	return s.ScriptSource.Connect(ctx)
}

// signalHandler is a slog handler that closes seen when a record with the
// message msg is logged.
type signalHandler struct {
	msg  string
	once *sync.Once
	seen chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// TestPipelineDeadLettersDrainedAtEnd: when every source has ended, the
// records a sink refuses while the pipeline drains reach the dead-letter
// sink before Run returns. They once stayed in the dead-letter log: the
// dead-letter sink's drain target was taken before the sinks had refused
// them.
func TestPipelineDeadLettersDrainedAtEnd(t *testing.T) {
	src := agenttest.NewScriptSource(batchOf(0, 5))
	draining := signalHandler{msg: "pipeline draining", once: new(sync.Once), seen: make(chan struct{})}
	sink := &agenttest.RecordingSink{Fail: func(attempt int, recs []agent.Record) error {
		if attempt == 1 {
			<-draining.seen // refuse only once the pipeline drains
			return &agent.RejectedError{Index: []int{1, 3}, Errs: []error{errors.New("too large"), errors.New("too large")}}
		}
		return nil
	}}
	dlq := &agenttest.RecordingSink{}
	reg := harness(src, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink)
	reg.Sinks["dlq"] = agent.Typed[agent.Sink]("test", func() *noConfig { return &noConfig{} }, func(*noConfig, agent.Env) (agent.Sink, error) { return dlq, nil })
	spec, err := reg.ParsePipeline("p.yaml", []byte(oneOfEach+"dead_letter: {dlq: {}, retry: {initial: 1ms, max: 5ms}}\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: runner.NewMetrics(), Logger: slog.New(draining), DataDir: t.TempDir(), OpenLog: agenttest.Open(), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := len(sink.Records()); got != 3 {
		t.Errorf("sink got %d records, want 3", got)
	}
	got := dlq.Records()
	if len(got) != 2 {
		t.Fatalf("dead-letter sink got %d records before Run returned, want 2", len(got))
	}
	if !dlq.Closed || !dlq.Flushed {
		t.Errorf("dead-letter sink closed=%v flushed=%v, want both", dlq.Closed, dlq.Flushed)
	}
}
