package kafka

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// running is a pipeline started in the background by startPipeline.
type running struct {
	p    *runner.Pipeline
	m    *runner.Metrics
	done chan error
}

// startPipeline starts a pipeline of src into a kafka sink entry (yaml body
// after "kafka:", with the default write_timeout unless it says otherwise)
// over the real disk log. wait returns once src has ended and the log is
// drained.
func startPipeline(t *testing.T, src agent.Source, sinkYAML, dataDir string, logger *slog.Logger) *running {
	t.Helper()
	reg := runner.NewRegistry()
	reg.Sources["steady"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["kafka"] = Factory()
	text := "sources: [{steady: {}}]\nsinks:\n  - kafka: " + sinkYAML + "\n    retry: {initial: 20ms, max: 500ms}\n    batch: {max_records: 200}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: dataDir, AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 60 * time.Second})
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	r := &running{p: p, m: m, done: make(chan error, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	go func() {
		defer cancel()
		r.done <- p.Run(ctx)
	}()
	return r
}

func (r *running) wait(t *testing.T) {
	t.Helper()
	if err := <-r.done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func (r *running) sink() runner.SinkStatus { return r.p.Status().Sinks[0] }

// freezer is a listener whose connections can be frozen: while frozen,
// nothing is read from or written to any of them and new ones are accepted
// but served nothing, like a broker that hangs or a route that black-holes
// packets (the client sees timeouts, not refusals).
type freezer struct {
	net.Listener
	mu     sync.Mutex
	frozen chan struct{} // closed while thawed; open while frozen
}

func newFreezer(l net.Listener) *freezer {
	f := &freezer{Listener: l, frozen: make(chan struct{})}
	close(f.frozen)
	return f
}

func (f *freezer) Accept() (net.Conn, error) {
	c, err := f.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frozenConn{Conn: c, f: f}, nil
}

// freeze stops every connection until thaw.
func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = make(chan struct{})
	f.mu.Unlock()
}

func (f *freezer) thaw() {
	f.mu.Lock()
	select {
	case <-f.frozen:
	default:
		close(f.frozen)
	}
	f.mu.Unlock()
}

func (f *freezer) gate() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

type frozenConn struct {
	net.Conn
	f *freezer
}

func (c *frozenConn) Read(b []byte) (int, error) {
	<-c.f.gate()
	n, err := c.Conn.Read(b)
	<-c.f.gate() // what arrived while frozen is held back
	return n, err
}

func (c *frozenConn) Write(b []byte) (int, error) {
	<-c.f.gate()
	return c.Conn.Write(b)
}

// TestOfflineWithinFiveSeconds takes the cluster away under a steady stream,
// once by closing it (connections refused) and once by freezing its
// connections (requests time out), with the sink's default write_timeout
// (30s). The sink must show as offline, with the reason in its last_error,
// within 5s; and once the cluster is back and the backlog drained, online
// again with last_error and offline_since cleared, and every record
// delivered.
func TestOfflineWithinFiveSeconds(t *testing.T) {
	const bound = 5 * time.Second // the promise: offline within 5s
	for _, mode := range []string{"refused", "timeout"} {
		t.Run(mode, func(t *testing.T) {
			var fr *freezer
			opts := []kfake.Opt{kfake.SeedTopics(2, "t")}
			if mode == "timeout" {
				opts = append(opts, kfake.ListenFn(func(network, addr string) (net.Listener, error) {
					l, err := net.Listen(network, addr)
					if err != nil {
						return nil, err
					}
					fr = newFreezer(l)
					return fr, nil
				}))
			}
			k := testbroker.StartKafka(t, opts...)
			const total = 20_000
			hold := make(chan struct{})
			src := &steadySource{total: total, per: 10, keys: 4, interval: 2 * time.Millisecond, hold: hold}
			logs := &agenttest.LogBuffer{}
			r := startPipeline(t, src, "{brokers: ["+k.Addr()+"], topic: t, dial_timeout: 2s}", t.TempDir(), logs.Logger(slog.LevelInfo))
			if !wait.Until(30*time.Second, func() bool { return r.sink().Records >= 500 }) {
				t.Fatalf("got %d records delivered, want 500 before the outage", r.sink().Records)
			}
			if st := r.sink(); !st.Online {
				t.Fatalf("got offline before the outage: %+v", st)
			}
			start := time.Now()
			switch mode {
			case "refused":
				k.Stop()
			case "timeout":
				fr.freeze()
			}
			// The wait goes past the bound to say by how much it was missed.
			gone := time.Now()
			ok := wait.Until(bound+5*time.Second, func() bool { return !r.sink().Online })
			took := time.Since(gone)
			st := r.sink()
			t.Logf("%s: offline after %s, last_error %q", mode, took.Round(10*time.Millisecond), st.LastError)
			if !ok || took > bound {
				t.Errorf("got offline after %s (online %v), want within %s", took, st.Online, bound)
			}
			if st.LastError == "" || st.OfflineSince.IsZero() || st.OfflineSince.Before(start.Add(-time.Second)) {
				t.Errorf("got last_error %q, offline_since %v, want the reason and a time after the outage began (%v)", st.LastError, st.OfflineSince, start)
			}
			waitEmitted(t, src, min(total, src.emitted()+500)) // records pile up on disk meanwhile
			switch mode {
			case "refused":
				k.Start()
			case "timeout":
				fr.thaw()
			}
			close(hold)
			if !wait.Until(60*time.Second, func() bool {
				st := r.sink()
				return st.Online && st.Backlog == 0 && st.Acked > 0 && st.LastError == ""
			}) {
				t.Errorf("after the outage: got %+v, want online, drained and no last_error", r.sink())
			}
			r.wait(t)
			st = r.sink()
			ps := r.p.Status()
			if !st.Online || st.LastError != "" || !st.OfflineSince.IsZero() || ps.LastError != "" {
				t.Errorf("after the drain: got online %v, last_error %q, offline_since %v, pipeline last_error %q; want online and both errors cleared",
					st.Online, st.LastError, st.OfflineSince, ps.LastError)
			}
			got := consume(t, k.Addr(), total, 30*time.Second, []string{"t"})
			dups := checkDelivery(t, got, total)
			t.Logf("%d records delivered, %d duplicates", len(got), dups)
			// One WARN says the sink went offline, one INFO that it came
			// back; franz-go's own warnings appear once each.
			warns := logs.Lines("level=WARN")
			t.Logf("WARN lines:\n%s", strings.Join(warns, "\n"))
			if n := len(logs.Lines("sink offline")); n != 1 {
				t.Errorf("got %d 'sink offline' lines, want 1 for the outage", n)
			}
			if n := len(logs.Lines("sink online again")); n != 1 {
				t.Errorf("got %d 'sink online again' lines, want 1", n)
			}
			seen := map[string]bool{}
			for _, l := range warns {
				msg := l[strings.Index(l, "msg="):]
				msg = msg[:strings.IndexAny(msg+" ", " ")]
				if seen[msg] {
					t.Errorf("WARN %s logged more than once in the outage", msg)
				}
				seen[msg] = true
			}
		})
	}
}

// TestHungWriteDropsClient freezes the cluster while a Write waits for its
// acknowledgements: the Write must end with a retryable error once
// write_timeout has passed (the client dropped, so that records in flight
// fail), and once ctx ends; the batch retried after the thaw on a new
// client must be delivered, every record of it.
func TestHungWriteDropsClient(t *testing.T) {
	// A transaction's produce waits through the same send as an
	// at-least-once Write.
	for _, delivery := range []string{"at_least_once", "exactly_once"} {
		t.Run(delivery, func(t *testing.T) { hungWriteDropsClient(t, delivery) })
	}
}

func hungWriteDropsClient(t *testing.T, delivery string) {
	var fr *freezer
	k := testbroker.StartKafka(t, kfake.SeedTopics(1, "t"), kfake.ListenFn(func(network, addr string) (net.Listener, error) {
		l, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		fr = newFreezer(l)
		return fr, nil
	}))
	cfg := testConfig(k.Addr(), "t")
	cfg.WriteTimeout = time.Second
	cfg.UnreachableAfter = time.Second
	cfg.Delivery = delivery
	s := connect(t, cfg)
	defer s.Close(context.Background())
	if err := s.Write(context.Background(), makeRecords(0, 10, 2)); err != nil {
		t.Fatalf("write before the freeze: %v", err)
	}
	s.mu.Lock()
	first := s.cl
	s.mu.Unlock()
	fr.freeze()
	// write_timeout passes.
	recs := makeRecords(10, 10, 2)
	done := make(chan error, 1)
	go func() { done <- s.Write(context.Background(), recs) }()
	select {
	case err := <-done:
		if err == nil || agent.IsPermanent(err) || !strings.Contains(err.Error(), "write_timeout") {
			t.Fatalf("got %v, want a retryable error naming write_timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("write still waiting 30s after write_timeout (1s)")
	}
	s.mu.Lock()
	kept := s.cl != nil
	s.mu.Unlock()
	if kept {
		t.Fatal("got the client kept after write_timeout, want it dropped")
	}
	if delivery == "at_least_once" {
		// ctx ends. (A transactional client is made only once the
		// cluster answers: there is no new client to wait for here.)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { done <- s.Write(ctx, recs) }()
		if !wait.Until(10*time.Second, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.cl != nil && s.cl != first
		}) {
			t.Fatal("no new client made for the retry")
		}
		cancel()
		select {
		case err := <-done:
			if err == nil || agent.IsPermanent(err) {
				t.Fatalf("got %v after ctx ended, want a retryable error", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("write still waiting 30s after ctx ended")
		}
	}
	fr.thaw()
	if err := s.Write(context.Background(), recs); err != nil {
		t.Fatalf("write after the thaw: %v", err)
	}
	var opts []kgo.Opt
	if delivery == "exactly_once" {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	got := consume(t, k.Addr(), 20, 30*time.Second, []string{"t"}, opts...)
	if dups := checkDelivery(t, got, 20); delivery == "exactly_once" && dups != 0 {
		t.Errorf("read committed: %d duplicates, want 0", dups)
	}
}
