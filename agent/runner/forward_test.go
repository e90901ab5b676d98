package runner_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

// paced slows a source down to one batch per every.
type paced struct {
	agent.Source
	every time.Duration
}

func (p paced) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	agent.Sleep(ctx, p.every)
	return p.Source.Read(ctx)
}

func runDisk(t testing.TB, src agent.Source, sink agent.Sink, sinkOpts string) {
	t.Helper()
	reg := harness(src, agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink)
	yaml := "sources: [{script: {}}]\nsinks: [{rec: {}, " + sinkOpts + "}]\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logger := slog.New(slog.DiscardHandler)
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestDrainOrder takes a sink down under a steady stream and brings it back:
// oldest_first delivers in log order; live_first delivers newer records
// ahead of the backlog; both deliver every record exactly once. The drain
// rate limit keeps the backlog around long enough for new records to
// overtake it however fast the machine is.
func TestDrainOrder(t *testing.T) {
	for _, name := range []string{"oldest_first", "live_first", "live_first/cursor_type"} {
		order, cursorType, _ := strings.Cut(name, "/")
		t.Run(name, func(t *testing.T) {
			const batches, per = 200, 10
			bs := make([][]agent.Record, batches)
			for i := range bs {
				bs[i] = batchOf(i*per, per)
			}
			var down atomic.Bool
			down.Store(true)
			sink := &agenttest.RecordingSink{Fail: func(int, []agent.Record) error {
				if down.Load() {
					return errors.New("uplink down")
				}
				return nil
			}}
			time.AfterFunc(250*time.Millisecond, func() { down.Store(false) })
			var as agent.Sink = sink
			if cursorType != "" {
				// A sink type that keeps a cursor only in some configs
				// (Kafka with exactly_once), in a config without one.
				as = notOwningCursor{sink}
			}
			runDisk(t, paced{agenttest.NewScriptSource(bs...), 2 * time.Millisecond}, as, "retry: {initial: 5ms, max: 20ms}, batch: {max_records: 50}, drain: {order: "+order+", records_per_second: 8000}")
			got := sink.Records()
			seen := map[uint64]bool{}
			inversions := 0
			var top uint64
			for _, r := range got {
				if seen[r.Seq] {
					t.Fatalf("record %d delivered twice", r.Seq)
				}
				seen[r.Seq] = true
				if r.Seq < top {
					inversions++
				}
				top = max(top, r.Seq)
			}
			if len(seen) != batches*per {
				t.Fatalf("got %d records, want %d", len(seen), batches*per)
			}
			switch {
			case order == "oldest_first" && inversions != 0:
				t.Errorf("got %d records delivered after a newer one, want log order", inversions)
			case order == "live_first" && inversions == 0:
				t.Errorf("got log order, want new records ahead of the backlog")
			}
			t.Logf("%s: %d records, %d delivered behind newer ones", name, len(got), inversions)
		})
	}
}

// notOwningCursor is a CursorOwner whose OwnsCursor says it keeps none.
type notOwningCursor struct{ *agenttest.RecordingSink }

func (notOwningCursor) Cursor(context.Context) (uint64, bool, error) {
	return 0, false, errors.New("no cursor: OwnsCursor is false")
}
func (notOwningCursor) OwnsCursor() bool { return false }

// countingSink counts delivered records and bytes with the time of the
// first and last write.
type countingSink struct {
	mu                 sync.Mutex
	n, bytes           int
	firstN, firstBytes int // of the first write, which the rate does not cover
	first, last        time.Time
}

func (c *countingSink) Connect(context.Context) error { return nil }
func (c *countingSink) Close(context.Context) error   { return nil }
func (c *countingSink) Write(_ context.Context, recs []agent.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first.IsZero() {
		c.first = time.Now()
	}
	c.n += len(recs)
	for _, r := range recs {
		r.ID = "" // as stored in the log: the ID is made when read
		b, _ := r.MarshalMsg(nil)
		c.bytes += len(b)
	}
	if c.firstN == 0 {
		c.firstN, c.firstBytes = c.n, c.bytes
	}
	c.last = time.Now()
	return nil
}

// BenchmarkDrainRateLimit drains a backlog through a records/s and a
// bytes/s limit and reports the achieved rate and its error against the
// limit. The rate is what the sink received between its first and its last
// write: the steady state an operator's metered link sees.
//
//	go test -run '^$' -bench DrainRateLimit -benchtime 1x ./agent
func BenchmarkDrainRateLimit(b *testing.B) {
	big := make([]byte, 200)
	cases := []struct {
		name  string
		opts  string
		limit float64
		n     int
		rec   func(i int) agent.Record
		unit  func(c *countingSink) float64
	}{
		{"records", "drain: {records_per_second: 4000}", 4000, 12000,
			func(i int) agent.Record { return batchOf(i, 1)[0] },
			func(c *countingSink) float64 { return float64(c.n - c.firstN) }},
		{"bytes", "drain: {bytes_per_second: 256KiB}", 256 << 10, 3200,
			func(i int) agent.Record { return agent.Record{Raw: big, RecvTime: int64(i)} },
			func(c *countingSink) float64 { return float64(c.bytes - c.firstBytes) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				bs := make([][]agent.Record, tc.n/100)
				for i := range bs {
					bs[i] = make([]agent.Record, 100)
					for j := range bs[i] {
						bs[i][j] = tc.rec(i*100 + j)
					}
				}
				sink := &countingSink{}
				runDisk(b, agenttest.NewScriptSource(bs...), sink, tc.opts)
				rate := tc.unit(sink) / sink.last.Sub(sink.first).Seconds()
				b.ReportMetric(rate, "per_s")
				b.ReportMetric(100*(rate-tc.limit)/tc.limit, "error_%")
				if d := (rate - tc.limit) / tc.limit; d > 0.05 || d < -0.05 {
					b.Errorf("got %.0f/s, want %.0f/s within 5%%", rate, tc.limit)
				}
			}
		})
	}
}

// TestSinkBytesCountsAcceptedPayloads checks pspf_sink_bytes_total: the log
// payload bytes of what the destination accepted, not of failed writes nor
// of records it refused for good. It also checks the stable IDs the runner
// gives the records it reads.
func TestSinkBytesCountsAcceptedPayloads(t *testing.T) {
	var bs [][]agent.Record
	for i := range 6 {
		b := batchOf(i*10, 10)
		for j := range b {
			b[j].Raw = make([]byte, i*37+j) // sizes differ record to record
		}
		bs = append(bs, b)
	}
	sink := &agenttest.RecordingSink{Fail: func(attempt int, recs []agent.Record) error {
		switch attempt {
		case 1:
			return errors.New("uplink down") // retried: not counted
		case 2:
			return &agent.RejectedError{Index: []int{1}, Errs: []error{errors.New("too large")}}
		}
		return nil
	}}
	m, err := runPipeline(t, harness(agenttest.NewScriptSource(bs...), agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink), oneOfEach, 10*time.Second)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	got := sink.Records()
	if len(got) != 59 {
		t.Fatalf("got %d records, want 59 (one refused)", len(got))
	}
	want := 0
	for _, r := range got {
		if r.ID != "p:"+strconv.FormatUint(r.Seq, 10) {
			t.Errorf("got ID %q for sequence %d, want p:%d", r.ID, r.Seq, r.Seq)
		}
		r.ID = "" // as stored in the log
		b, _ := r.MarshalMsg(nil)
		want += len(b)
	}
	line := metric(m, "pspf_sink_bytes_total")
	if !strings.HasSuffix(line, " "+strconv.Itoa(want)) {
		t.Errorf("got %q, want %d bytes", line, want)
	}
	if line := metric(m, "pspf_sink_records_total"); !strings.HasSuffix(line, " 59") {
		t.Errorf("got %q, want 59 records", line)
	}
}

// scribbleLog wraps a Log: its readers return at most per records a Read
// and hold the contract "payloads are valid until the next Read" to the
// letter (scribbleReader), and it counts what was appended.
type scribbleLog struct {
	runner.Log
	per      int
	appended atomic.Int64
}

func (l *scribbleLog) Append(ctx context.Context, payloads [][]byte) (uint64, error) {
	last, err := l.Log.Append(ctx, payloads)
	if err == nil {
		l.appended.Add(int64(len(payloads)))
	}
	return last, err
}

func (l *scribbleLog) Reader(name string) (runner.LogReader, error) {
	r, err := l.Log.Reader(name)
	if err != nil {
		return nil, err
	}
	return &scribbleReader{LogReader: r, per: l.per}, nil
}

// scribbleReader copies each Read's payloads into one buffer of its own,
// which it overwrites with 0xEE at the start of the next Read.
type scribbleReader struct {
	runner.LogReader
	per int
	buf []byte
}

func (r *scribbleReader) Read(ctx context.Context, buf []runner.LogRecord, maxBytes int) ([]runner.LogRecord, error) {
	full := r.buf[:cap(r.buf)]
	for i := range full {
		full[i] = 0xEE
	}
	got, err := r.LogReader.Read(ctx, buf[:0:min(cap(buf), r.per)], maxBytes)
	need := 0
	for _, lr := range got {
		need += len(lr.Payload)
	}
	if need > cap(r.buf) {
		r.buf = make([]byte, 0, 2*need)
	}
	r.buf = r.buf[:0]
	for i, lr := range got {
		start := len(r.buf)
		r.buf = append(r.buf, lr.Payload...)
		got[i].Payload = r.buf[start:len(r.buf)]
	}
	return got, err
}

// TestTopUpKeepsTheFirstRead drains a backlog through a log whose Reads
// return a few records each and overwrite what the last one handed out, so
// that every batch is topped up by several Reads: every record must arrive
// once, with its own payload, and no write may be garbled or lose the
// records of its batch's first Read.
func TestTopUpKeepsTheFirstRead(t *testing.T) {
	const batches, per, perRead = 30, 20, 7
	var bs [][]agent.Record
	want := map[string]bool{}
	for i := range batches {
		b := make([]agent.Record, per)
		for j := range b {
			id := i*per + j
			b[j] = agent.Record{Key: "k" + strconv.Itoa(id%5), Raw: []byte(strings.Repeat("x", id%97) + "#" + strconv.Itoa(id))}
			want[string(b[j].Raw)] = true
		}
		bs = append(bs, b)
	}
	var log *scribbleLog
	largest := 0 // records in the largest write accepted
	sink := &agenttest.RecordingSink{Fail: func(_ int, recs []agent.Record) error {
		if log.appended.Load() < batches*per {
			return errors.New("uplink down until the backlog is complete")
		}
		largest = max(largest, len(recs)) // under the sink's lock
		return nil
	}}
	reg := harness(agenttest.NewScriptSource(bs...), agenttest.OperatorFunc(func(context.Context, *agent.Batch) error { return nil }), sink)
	spec, err := reg.ParsePipeline("p.yaml", []byte("sources: [{script: {}}]\nsinks: [{rec: {}, retry: {initial: 1ms, max: 5ms}, batch: {max_records: 50}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	logger := slog.New(slog.DiscardHandler)
	open := runner.OpenDiskLog(logger)
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), Logger: logger, ShutdownTimeout: 30 * time.Second,
		OpenLog: func(dir string, cfg runner.BufferConfig) (runner.Log, error) {
			l, err := open(dir, cfg)
			if err != nil {
				return nil, err
			}
			if filepath.Base(dir) != "log" { // the dead-letter log
				return l, nil
			}
			log = &scribbleLog{Log: l, per: perRead}
			return log, nil
		}})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	seen := map[string]int{}
	for _, r := range sink.Records() {
		seen[string(r.Raw)]++
	}
	lost, dup, alien := 0, 0, 0
	for raw := range want {
		switch seen[raw] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	for raw := range seen {
		if !want[raw] {
			alien++
		}
	}
	if lost != 0 || dup != 0 || alien != 0 {
		t.Errorf("got %d records lost, %d delivered twice, %d garbled; want none", lost, dup, alien)
	}
	if largest <= perRead {
		t.Errorf("got writes of at most %d records, want more than one Read's %d: the backlog was not topped up", largest, perRead)
	}
}
