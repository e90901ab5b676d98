package http

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/wait"
)

// endpoint is an HTTP receiver on a fixed loopback port that can be taken
// away (connections refused) or made to hang (requests read, never
// answered), and brought back.
type endpoint struct {
	t    *testing.T
	addr string

	mu   sync.Mutex
	srv  *nethttp.Server
	hang chan struct{} // open while requests hang
	got  map[int]int   // records received, by their field i
}

func newEndpoint(t *testing.T) *endpoint {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{t: t, addr: l.Addr().String(), got: map[int]int{}}
	e.serve(l)
	t.Cleanup(func() { e.thaw(); e.stop() })
	return e
}

func (e *endpoint) serve(l net.Listener) {
	srv := &nethttp.Server{Handler: nethttp.HandlerFunc(e.handle)}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
	go srv.Serve(l)
}

func (e *endpoint) handle(w nethttp.ResponseWriter, r *nethttp.Request) {
	e.mu.Lock()
	hang := e.hang
	e.mu.Unlock()
	if hang != nil {
		<-hang
	}
	var in io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(nethttp.StatusBadRequest)
			return
		}
		in = zr
	}
	body, err := io.ReadAll(in)
	var recs []map[string]any
	if err == nil {
		err = json.Unmarshal(body, &recs)
	}
	if err != nil {
		w.WriteHeader(nethttp.StatusBadRequest)
		return
	}
	e.mu.Lock()
	for _, rec := range recs {
		e.got[int(rec["i"].(float64))]++
	}
	e.mu.Unlock()
}

// stop closes the listener and every connection: connections are refused.
func (e *endpoint) stop() {
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (e *endpoint) start() {
	var l net.Listener
	var err error
	wait.Until(2*time.Second, func() bool { // the port may linger for a moment
		l, err = net.Listen("tcp", e.addr)
		return err == nil
	})
	if err != nil {
		e.t.Fatalf("listen again: %v", err)
	}
	e.serve(l)
}

func (e *endpoint) freeze() {
	e.mu.Lock()
	e.hang = make(chan struct{})
	e.mu.Unlock()
}

func (e *endpoint) thaw() {
	e.mu.Lock()
	if e.hang != nil {
		close(e.hang)
		e.hang = nil
	}
	e.mu.Unlock()
}

func (e *endpoint) distinct() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

// TestOfflineWithinFiveSeconds takes the endpoint away under a steady
// stream, once by closing it (connections refused) and once by making it
// hang (requests unanswered), with the default timeout (10s). The sink must
// show as offline, with the reason, within 5s, and once the endpoint is
// back, online with last_error cleared; every record arrives.
func TestOfflineWithinFiveSeconds(t *testing.T) {
	const bound = 5 * time.Second
	for _, mode := range []string{"refused", "timeout"} {
		t.Run(mode, func(t *testing.T) {
			e := newEndpoint(t)
			const total = 4000
			batches := make([][]agent.Record, total/10)
			for b := range batches {
				batches[b] = make([]agent.Record, 10)
				for i := range batches[b] {
					batches[b][i] = agent.Record{Key: "k", Fields: []agent.Field{agent.Int("i", int64(b*10+i))}}
				}
			}
			src := &paced{ScriptSource: agenttest.NewScriptSource(batches...), every: 5 * time.Millisecond}
			reg := runner.NewRegistry()
			reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
			reg.Sinks["http"] = Factory()
			yaml := "sources: [{script: {}}]\nsinks:\n  - http: {url: 'http://" + e.addr + "/in'}\n    retry: {initial: 20ms, max: 200ms}\n"
			spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
			if err != nil {
				t.Fatal(err)
			}
			logger := slog.New(slog.DiscardHandler)
			p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 60 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			go func() { done <- p.Run(ctx) }()
			sink := func() runner.SinkStatus { return p.Status().Sinks[0] }
			if !wait.Until(30*time.Second, func() bool { return sink().Records >= 300 }) {
				t.Fatalf("got %+v, want 300 records delivered before the outage", sink())
			}
			switch mode {
			case "refused":
				e.stop()
			case "timeout":
				e.freeze()
			}
			// The bound is the promise of the issue, not a speed figure; the
			// wait goes past it to say by how much it was missed.
			start := time.Now()
			ok := wait.Until(bound+5*time.Second, func() bool { return !sink().Online })
			took := time.Since(start)
			st := sink()
			t.Logf("%s: offline after %s, last_error %q", mode, took.Round(10*time.Millisecond), st.LastError)
			if !ok || took > bound || st.LastError == "" {
				t.Errorf("got offline %v after %s, last_error %q; want offline within %s, with the reason", !st.Online, took, st.LastError, bound)
			}
			switch mode {
			case "refused":
				e.start()
			case "timeout":
				e.thaw()
			}
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			if st := sink(); !st.Online || st.LastError != "" || !st.OfflineSince.IsZero() || p.Status().LastError != "" {
				t.Errorf("after the drain: got %+v, pipeline last_error %q; want online, all cleared", st, p.Status().LastError)
			}
			if got := e.distinct(); got != total {
				t.Errorf("got %d distinct records, want %d", got, total)
			}
		})
	}
}

// paced slows a ScriptSource down to one batch per every.
type paced struct {
	*agenttest.ScriptSource
	every time.Duration
}

func (p *paced) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	agent.Sleep(ctx, p.every)
	return p.ScriptSource.Read(ctx)
}

// TestUnreachableWithoutConnection gives the sink a connection whose peer
// never completes the TLS handshake: the POST has no connection, and the
// sink must say so after unreachable_after, while the Write itself waits
// until timeout. It runs in a synctest bubble over in-memory connections,
// so both times are exact on the bubble's clock.
func TestUnreachableWithoutConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := *Defaults()
		cfg.URL = "https://ingest.example:8443/in"
		cfg.Timeout = 4 * time.Second
		cfg.UnreachableAfter = time.Second
		type report struct {
			err error
			at  time.Duration
		}
		reports := make(chan report, 4)
		start := time.Now()
		env := agent.Env{Pipeline: "p", Component: "http", AgentName: "gw1",
			Unreachable: func(err error) { reports <- report{err, time.Since(start)} }}
		s, err := New(cfg, env)
		if err != nil {
			t.Fatal(err)
		}
		// Every dial gets a connection whose peer reads nothing: the
		// ClientHello is never taken. Closing the peers at the end ends
		// the transport's handshakes.
		var mu sync.Mutex
		var peers []net.Conn
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range peers {
				c.Close()
			}
		}()
		tr := s.client.Transport.(*nethttp.Transport)
		tr.Proxy = nil
		tr.DialContext = func(context.Context, string, string) (net.Conn, error) {
			c, peer := net.Pipe()
			mu.Lock()
			peers = append(peers, peer)
			mu.Unlock()
			return c, nil
		}
		err = s.Write(context.Background(), []agent.Record{{ID: "p:1", Fields: []agent.Field{agent.Int("i", 1)}}})
		took := time.Since(start)
		if err == nil || agent.IsPermanent(err) {
			t.Errorf("write: got %v, want a retryable error after the timeout", err)
		}
		close(reports)
		var got []report
		for r := range reports {
			got = append(got, r)
		}
		if len(got) != 1 || !strings.Contains(got[0].err.Error(), "no connection to ingest.example:8443") || got[0].at != cfg.UnreachableAfter {
			t.Fatalf("got reports %v, want one saying there is no connection, after unreachable_after (1s)", got)
		}
		if took != cfg.Timeout {
			t.Errorf("write returned after %s, want it to wait for the timeout (4s)", took)
		}
		_ = s.Close(context.Background())
	})
}

func TestUnreachableAfterBounds(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return nil, nil })
	reg.Sinks["http"] = Factory()
	for _, tc := range []struct{ body, want string }{
		{"{url: 'http://x:1/', unreachable_after: 10ms}", "unreachable_after: must be between 100ms and timeout (10s)"},
		{"{url: 'http://x:1/', timeout: 2s, unreachable_after: 3s}", "unreachable_after: must be between 100ms and timeout (2s)"},
	} {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{script: {}}]\nsinks: [{http: "+tc.body+"}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}
