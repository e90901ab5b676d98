package http

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func TestREADMESample(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["http"] = Factory()
	t.Setenv("INGEST_TOKEN", "tok")
	t.Setenv("INGEST_API_KEY", "key")
	specs := agenttest.CheckREADMESamples(t, "README.md", reg)
	if len(specs) == 1 {
		if c := specs[0].Sinks[0].Config.(*Config); c.BearerToken != "tok" || c.Headers["X-Tenant"] != "acme" || c.SecretHeaders["X-Api-Key"] != "key" {
			t.Errorf("got %+v, want the sample's values", c)
		}
	}
}

func TestClassify(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		code       int
		retryAfter string
		permanent  bool
		delay      time.Duration
		ok         bool
	}{
		{code: 200, ok: true},
		{code: 204, ok: true},
		{code: 400, permanent: true},
		{code: 401, permanent: true},
		{code: 404, permanent: true},
		{code: 408},
		{code: 500},
		{code: 502},
		{code: 429},
		{code: 429, retryAfter: "7", delay: 7 * time.Second},
		{code: 503, retryAfter: now.Add(90 * time.Second).Format(nethttp.TimeFormat), delay: 90 * time.Second},
		{code: 503, retryAfter: "soon"},
	}
	for _, c := range cases {
		t.Run(strconv.Itoa(c.code)+"/"+c.retryAfter, func(t *testing.T) {
			resp := &nethttp.Response{StatusCode: c.code, Header: nethttp.Header{}}
			if c.retryAfter != "" {
				resp.Header.Set("Retry-After", c.retryAfter)
			}
			err := classify(resp, []byte("nope"), now)
			if (err == nil) != c.ok {
				t.Fatalf("got %v, want ok=%v", err, c.ok)
			}
			if c.ok {
				return
			}
			if got := agent.IsPermanent(err); got != c.permanent {
				t.Errorf("got permanent=%v, want %v", got, c.permanent)
			}
			d, has := agent.RetryAfter(err)
			if has != (c.delay > 0) || d != c.delay {
				t.Errorf("got retry after %v (%v), want %v", d, has, c.delay)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != c.code {
				t.Errorf("got %v, want a StatusError with code %d", err, c.code)
			}
		})
	}
}

// flaky answers request n with script[n] (then 200): "500", "429" (with
// Retry-After: 1), "slow" (answers nothing until the client times out), "reset"
// (closes the connection without answering), "200-reset" (takes the batch,
// answers 200 and resets the connection mid-body), "400".
type flaky struct {
	t      *testing.T
	script []string

	mu    sync.Mutex
	n     int
	times []time.Time
	keys  []string
	got   map[string]int // _id -> deliveries that were answered 200
}

func (f *flaky) ServeHTTP(w nethttp.ResponseWriter, r *nethttp.Request) {
	f.mu.Lock()
	step := "200"
	if f.n < len(f.script) {
		step = f.script[f.n]
	}
	f.n++
	f.times = append(f.times, time.Now())
	f.keys = append(f.keys, r.Header.Get("Idempotency-Key"))
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("X-Tenant") != "acme" || r.Header.Get("Pspf-Agent") != "gw1" {
		f.t.Errorf("got headers %v, want bearer, X-Tenant and Pspf-Agent", r.Header)
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		f.t.Errorf("gzip: %v", err)
		return
	}
	body, _ := io.ReadAll(zr)
	var recs []map[string]any
	if err := json.Unmarshal(body, &recs); err != nil {
		f.t.Errorf("body %q: %v", body, err)
	}
	switch step {
	case "500":
		nethttp.Error(w, "boom", 500)
	case "429":
		w.Header().Set("Retry-After", "1")
		nethttp.Error(w, "slow down", 429)
	case "400":
		nethttp.Error(w, "bad", 400)
	case "slow": // no answer until the client gives up (its timeout)
		<-r.Context().Done()
	case "reset":
		conn, _, _ := w.(nethttp.Hijacker).Hijack()
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	case "200-reset": // accept, then reset the connection mid-answer
		f.mu.Lock()
		for _, r := range recs {
			f.got[r["_id"].(string)]++
		}
		f.mu.Unlock()
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		w.Write([]byte("partial..."))
		w.(nethttp.Flusher).Flush()
		conn, _, _ := w.(nethttp.Hijacker).Hijack()
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	default:
		f.mu.Lock()
		for _, r := range recs {
			f.got[r["_id"].(string)]++
		}
		f.mu.Unlock()
	}
}

func TestPipelineAgainstFlakyServer(t *testing.T) {
	f := &flaky{t: t, script: []string{"500", "429", "slow", "200", "reset", "reset", "200-reset", "400"}, got: map[string]int{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	batches := make([][]agent.Record, 5)
	for b := range batches {
		batches[b] = make([]agent.Record, 10)
		for i := range batches[b] {
			batches[b][i] = agent.Record{Key: "k", Fields: []agent.Field{agent.Int("i", int64(b*10+i))}}
		}
	}
	src := agenttest.NewScriptSource(batches...)
	reg := runner.NewRegistry()
	reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["http"] = Factory()
	yaml := "sources: [{script: {}}]\nsinks:\n  - http: {url: " + srv.URL + ", bearer_token: tok, headers: {X-Tenant: acme}, timeout: 300ms}\n    retry: {initial: 1ms, max: 5ms}\n    batch: {max_records: 10}\n"
	spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	m := runner.NewMetrics()
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Metrics: m, DataDir: t.TempDir(), AgentName: "gw1", OpenLog: agenttest.Open(), ShutdownTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// One batch of 10 hit the 400 and went to the dead letters; the other
	// 40 records arrived.
	if len(f.got) != 40 {
		t.Errorf("got %d distinct records, want 40", len(f.got))
	}
	// The 429's Retry-After: 1 held the next attempt back although the
	// backoff is 1-5ms. A lower bound on wall time: a slow machine only
	// widens the gap. (The wait runs in agent's forwarder, on its clock.)
	if gap := f.times[2].Sub(f.times[1]); gap < time.Second {
		t.Errorf("got %v between the 429 and the next attempt, want at least 1s", gap)
	}
	// The first batch was retried under the same key.
	if f.keys[0] != f.keys[1] || f.keys[1] != f.keys[2] {
		t.Errorf("got keys %v, want the first three equal", f.keys[:3])
	}
	var b bytesBuilder
	m.WritePrometheus(&b)
	if !b.contains(`pspf_dead_letters_total{pipeline="p"} 10`) {
		t.Errorf("metrics %s: want 10 dead letters", b)
	}
}

type bytesBuilder struct{ b []byte }

func (w *bytesBuilder) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *bytesBuilder) String() string              { return string(w.b) }
func (w *bytesBuilder) contains(s string) bool {
	for i := 0; i+len(s) <= len(w.b); i++ {
		if string(w.b[i:i+len(s)]) == s {
			return true
		}
	}
	return false
}

func TestNDJSONUncompressed(t *testing.T) {
	var body []byte
	srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		body, _ = io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/x-ndjson" || r.Header.Get("Content-Encoding") != "" {
			t.Errorf("got headers %v, want ndjson without encoding", r.Header)
		}
	}))
	defer srv.Close()
	s, err := New(Config{URL: srv.URL, Format: "ndjson", Timeout: time.Second}, agent.Env{AgentName: "gw1", Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	recs := []agent.Record{{ID: "p:1", Fields: []agent.Field{agent.Int("a", 1)}}, {ID: "p:2", Fields: []agent.Field{agent.Int("a", 2)}}}
	if err := s.Write(context.Background(), recs); err != nil {
		t.Fatalf("write: %v", err)
	}
	if want := "{\"_id\":\"p:1\",\"a\":1}\n{\"_id\":\"p:2\",\"a\":2}\n"; string(body) != want {
		t.Errorf("got %q, want %q", body, want)
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := agent.Env{AgentName: "gw1", Pipeline: "p"}
	recs := []agent.Record{{ID: "p:1"}}
	s, err := New(Config{URL: srv.URL, Format: "ndjson", Timeout: time.Second, TLS: agent.TLSConfig{CAFile: ca}}, env)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), recs); err != nil {
		t.Errorf("write with the server's CA: %v", err)
	}
	// Without the CA the certificate is not trusted: retryable, never sent.
	s2, _ := New(Config{URL: srv.URL, Format: "ndjson", Timeout: time.Second}, env)
	if err := s2.Write(context.Background(), recs); err == nil || agent.IsPermanent(err) {
		t.Errorf("write without the CA: got %v, want a retryable TLS error", err)
	}
}
