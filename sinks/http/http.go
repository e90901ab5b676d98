// Package http is a sink that POSTs batches of records to an HTTP endpoint
// as a JSON array or NDJSON, optionally gzipped, with an Idempotency-Key per
// batch so that the receiver can drop a batch it has already taken.
package http

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the HTTP sink's config.
type Config struct {
	URL     string            `yaml:"url" doc:"endpoint that receives the POSTs, http:// or https://"`
	Format  string            `yaml:"format" enum:"json_array,ndjson" doc:"json_array: one JSON array per batch; ndjson: one JSON object per line"`
	Gzip    bool              `yaml:"gzip" doc:"gzip the body (Content-Encoding: gzip)"`
	Headers map[string]string `yaml:"headers" doc:"extra request headers"`
	// SecretHeaders are sent like Headers; their values (API keys, basic
	// credentials) are masked in every log line, status and dead-letter
	// reason.
	SecretHeaders map[string]string `yaml:"secret_headers" secret:"true" doc:"extra request headers whose values are secrets (API keys): never shown; use ${ENV} or ${file:/path}"`
	BearerToken   string            `yaml:"bearer_token" secret:"true" doc:"sent as Authorization: Bearer; use ${ENV} or ${file:/path}; never shown"`
	Timeout       time.Duration     `yaml:"timeout" min:">0" doc:"how long one POST may take, answer included"`
	// UnreachableAfter is how long a POST may go without a connection, or
	// without the first byte of the answer once the request is sent, before
	// the sink shows as offline; the POST keeps waiting until timeout.
	UnreachableAfter time.Duration   `yaml:"unreachable_after" doc:"how long a POST may wait for a connection, or for the answer once sent, before the sink shows offline; the POST keeps waiting until timeout"`
	TLS              agent.TLSConfig `yaml:"tls" doc:"TLS for https:// URLs; refused with http:// ones"`
}

// Defaults returns the defaults: a JSON array per batch, gzip, 10s timeout,
// offline after 3s without a connection or an answer.
func Defaults() *Config {
	return &Config{Format: "json_array", Gzip: true, Timeout: 10 * time.Second, UnreachableAfter: 3 * time.Second}
}

// Validate checks the config beyond its fields' tags.
func (c *Config) Validate(n agent.Node) {
	u, err := url.Parse(c.URL)
	if c.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		n.Field("url").Errorf("must be an http:// or https:// URL, got %q", agent.RedactURL(c.URL))
	} else if _, err := c.TLS.On(u.Scheme); err != nil {
		// A tls block that would be ignored is refused (agent.TLSConfig).
		n.Field("url").Errorf("%v", err)
	}
	// Under 100ms a healthy round trip over a mobile uplink would count as
	// an outage; beyond timeout the POST has failed already (left unset, it
	// is at most timeout).
	if f := n.Field("unreachable_after"); f.Present() && (c.UnreachableAfter < 100*time.Millisecond || c.UnreachableAfter > c.Timeout) {
		f.Errorf("must be between 100ms and timeout (%s), got %q", c.Timeout, f.Text())
	}
	for _, key := range []string{"headers", "secret_headers"} {
		for _, k := range n.Field(key).Keys() {
			if k == "" || strings.ContainsAny(k, " :\r\n") {
				n.Field(key).Errorf("header name %q is not a valid HTTP header name", k)
			}
			if _, ok := c.Headers[k]; ok && key == "secret_headers" {
				n.Field(key).Field(k).Errorf("header %q is in headers too", k)
			}
		}
	}
}

// Factory returns the registry entry of the HTTP sink.
func Factory() agent.Factory[agent.Sink] {
	return agent.Typed[agent.Sink]("POSTs batches as a JSON array or NDJSON, with an Idempotency-Key per batch", Defaults, func(c *Config, env agent.Env) (agent.Sink, error) {
		return New(*c, env)
	})
}

// Sink POSTs each batch once and reads the answer: a 2xx accepts the batch;
// 429 and 503 are retried after the server's Retry-After (if any); 408 and
// other 5xx, timeouts and network errors are retried with backoff; any other
// 4xx refuses the batch for good (dead letters). Write is called from one
// goroutine at a time.
type Sink struct {
	cfg    Config
	env    agent.Env
	log    *slog.Logger
	client *http.Client
	body   bytes.Buffer
	raw    []byte
	gz     *gzip.Writer
}

// New returns an HTTP sink. It loads the TLS files; it opens no connection.
func New(cfg Config, env agent.Env) (*Sink, error) {
	env = env.WithDefaults()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("http sink: url: %w", err)
	}
	if on, err := cfg.TLS.On(u.Scheme); err != nil {
		return nil, fmt.Errorf("http sink: url: %w", err)
	} else if on {
		if tr.TLSClientConfig, err = cfg.TLS.Build(); err != nil {
			return nil, fmt.Errorf("http sink: %w", err)
		}
	}
	cfg.UnreachableAfter = min(cfg.UnreachableAfter, cfg.Timeout)
	if u, err := url.Parse(cfg.URL); err == nil && u.User != nil {
		// Go's client sends the URL's credentials as basic auth.
		pw, _ := u.User.Password()
		env.Secrets.Add(pw)
	}
	return &Sink{cfg: cfg, env: env, log: env.Logger, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// Connect does nothing: connections are made per request and kept alive.
func (s *Sink) Connect(context.Context) error { return nil }

// IdempotencyKey returns the key of a batch: a hash of its first and last
// stable IDs and its length. A batch retried after a timeout or a reset gets
// the same key, so the receiver can recognise it.
func IdempotencyKey(recs []agent.Record) string {
	h := sha256.New()
	h.Write([]byte(recs[0].ID))
	h.Write([]byte{0})
	h.Write([]byte(recs[len(recs)-1].ID))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(len(recs))))
	return "pspf-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Write POSTs recs as one request and classifies the answer.
func (s *Sink) Write(ctx context.Context, recs []agent.Record) error {
	if len(recs) == 0 {
		return nil
	}
	body, err := s.encode(recs)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return agent.Permanent(fmt.Errorf("http sink: %w", err))
	}
	if s.cfg.Format == "ndjson" {
		req.Header.Set("Content-Type", "application/x-ndjson")
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	// The key also makes Go's transport treat the POST as replayable on a
	// kept-alive connection that the server closed before answering.
	req.Header.Set("Idempotency-Key", IdempotencyKey(recs))
	req.Header.Set("Pspf-Agent", s.env.AgentName)
	req.Header.Set("Pspf-Pipeline", s.env.Pipeline)
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	for k, v := range s.cfg.SecretHeaders {
		req.Header.Set(k, v)
	}
	if s.cfg.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.BearerToken)
	}
	w := s.watch(len(recs))
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), w.trace()))
	resp, err := s.client.Do(req)
	w.stop()
	if err != nil {
		return fmt.Errorf("http sink: post: %w", err)
	}
	defer resp.Body.Close()
	// Read a little of the answer for the error message; drain the rest so
	// the connection is reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return classify(resp, snippet, time.Now())
}

// postWatch tells the runner, once per POST, that the endpoint went silent
// while the POST waits: no connection for unreachable_after (a dial or TLS
// handshake that hangs), or no first byte of the answer for
// unreachable_after once the request was sent (a server that hangs,
// packets black-holed). It runs on a goroutine of its own, joined by stop
// before Write returns. A slow upload is not silence: the clock starts once
// the whole request is sent.
type postWatch struct {
	s     *Sink
	n     int
	start time.Time
	conn  atomic.Int64 // unix nanos: a connection was got
	sent  atomic.Int64 // unix nanos: the request was written
	got   atomic.Bool  // the first byte of the answer came
	done  chan struct{}
	wg    sync.WaitGroup
}

func (s *Sink) watch(n int) *postWatch {
	w := &postWatch{s: s, n: n, start: time.Now(), done: make(chan struct{})}
	if s.env.Unreachable != nil && s.cfg.UnreachableAfter > 0 {
		w.wg.Go(w.run)
	}
	return w
}

func (w *postWatch) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GotConn:              func(httptrace.GotConnInfo) { w.conn.Store(time.Now().UnixNano()) },
		WroteRequest:         func(httptrace.WroteRequestInfo) { w.sent.Store(time.Now().UnixNano()) },
		GotFirstResponseByte: func() { w.got.Store(true) },
	}
}

func (w *postWatch) run() {
	s := w.s
	after := s.cfg.UnreachableAfter
	tick := time.NewTicker(max(after/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-tick.C:
		}
		if w.got.Load() {
			return
		}
		var err error
		switch sent := w.sent.Load(); {
		case w.conn.Load() == 0 && time.Since(w.start) >= after:
			err = fmt.Errorf("http sink: no connection to %s for %s, %d records waiting (retrying until timeout)", s.host(), after, w.n)
		case sent != 0 && time.Since(time.Unix(0, sent)) >= after:
			err = fmt.Errorf("http sink: no answer from %s for %s after the request was sent, %d records waiting (retrying until timeout)", s.host(), after, w.n)
		default:
			continue
		}
		s.env.Unreachable(err)
		return // once per POST
	}
}

func (w *postWatch) stop() {
	close(w.done)
	w.wg.Wait()
}

// host is the endpoint's host:port, for messages (the URL may carry secrets).
func (s *Sink) host() string {
	if u, err := url.Parse(s.cfg.URL); err == nil {
		return u.Host
	}
	return "the endpoint"
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int    // the HTTP status
	Body string // the start of the answer's body
}

// Error says the status and the start of the answer.
func (e *StatusError) Error() string {
	return fmt.Sprintf("http sink: status %d: %s", e.Code, strings.TrimSpace(e.Body))
}

func classify(resp *http.Response, body []byte, now time.Time) error {
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err := &StatusError{Code: code, Body: string(body)}
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			return agent.WithRetryAfter(err, d)
		}
		return err
	case code == http.StatusRequestTimeout:
		return err
	case code >= 400 && code < 500:
		return agent.Permanent(err)
	}
	return err
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// encode renders the batch in the configured format, gzipped if asked.
func (s *Sink) encode(recs []agent.Record) ([]byte, error) {
	b := s.raw[:0]
	if s.cfg.Format == "json_array" {
		b = append(b, '[')
	}
	for i := range recs {
		if i > 0 && s.cfg.Format == "json_array" {
			b = append(b, ',')
		}
		b = agent.AppendJSON(b, &recs[i])
		if s.cfg.Format == "ndjson" {
			b = append(b, '\n')
		}
	}
	if s.cfg.Format == "json_array" {
		b = append(b, ']')
	}
	s.raw = b
	if !s.cfg.Gzip {
		return b, nil
	}
	s.body.Reset()
	if s.gz == nil {
		s.gz = gzip.NewWriter(&s.body)
	} else {
		s.gz.Reset(&s.body)
	}
	if _, err := s.gz.Write(b); err != nil {
		return nil, fmt.Errorf("http sink: gzip: %w", err)
	}
	if err := s.gz.Close(); err != nil {
		return nil, fmt.Errorf("http sink: gzip: %w", err)
	}
	return s.body.Bytes(), nil
}

// Close closes idle connections. It is idempotent.
func (s *Sink) Close(context.Context) error {
	s.client.CloseIdleConnections()
	return nil
}
