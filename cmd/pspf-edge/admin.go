package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pspf/pspf-edge/agent/fleet"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// adminHandler serves the admin API:
//
//	/healthz           200 while the process serves requests
//	/readyz            200 once every pipeline with a valid config runs, 503 before
//	/metrics           Prometheus text: the agent's metrics, then process ones
//	/api/v1/pipelines  JSON: every pipeline's view (see supervisor.PipelineView)
//	/debug/pprof/      profiles, only in binaries built with -tags pprof
//
// Every path is read-only (GET and HEAD). The guard around it (adminGuard)
// checks the Host, the Origin and, when admin.token is set, the bearer
// token.
func adminHandler(sup *supervisor.Supervisor, metrics *runner.Metrics, logger *slog.Logger, fleetStatus func() fleet.Status) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := sup.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		metrics.WritePrometheus(w)
		vm.WriteProcessMetrics(w) // go_* (goroutines, memory) and process_* (RSS, CPU)
		vm.WriteFDMetrics(w)      // process_open_fds, process_max_fds
	})
	mux.HandleFunc("GET /api/v1/pipelines", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Pipelines []supervisor.PipelineView `json:"pipelines"`
		}{sup.Views()})
	})
	// The fleet bundle running, its trial, the last rollback and refusal
	// (docs/fleet.md); 404 when the agent has no fleet section.
	mux.HandleFunc("GET /api/v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		if fleetStatus == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(fleetStatus())
	})
	addProfiling(mux)
	cfg := sup.Config().Admin
	hosts := slices.Clone(cfg.AllowedHosts)
	if h, _, err := net.SplitHostPort(cfg.Address); err == nil && h != "" {
		hosts = append(hosts, h) // the name it was told to listen on
	}
	return &adminGuard{next: mux, token: func() string { return sup.Config().Admin.Token }, hosts: hosts, metrics: metrics, log: logger}
}

// adminGuard refuses, before the API sees them:
//
//   - a Host that names neither an IP address, nor localhost, nor one of
//     admin.allowed_hosts (403): a page in a browser on the gateway that
//     had its own name resolved to the agent's address (DNS rebinding)
//     would otherwise read the API as if it were the page's origin;
//   - an Origin other than the Host's, or Sec-Fetch-Site: cross-site
//     (403): a request made by another site's page;
//   - with a token, a request to anything but /healthz without
//     Authorization: Bearer TOKEN (401), compared in constant time;
//   - any method but GET and HEAD (405): the API is read-only.
//
// Each refusal counts in pspf_admin_refused_total{reason} and logs one
// WARN per reason and minute.
type adminGuard struct {
	next    http.Handler
	token   func() string
	hosts   []string
	metrics *runner.Metrics
	log     *slog.Logger

	mu     sync.Mutex
	warned map[string]time.Time
}

func (g *adminGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		g.refuse(w, r, "method", http.StatusMethodNotAllowed, "the admin API is read-only")
		return
	}
	if !g.hostAllowed(r.Host) {
		g.refuse(w, r, "host", http.StatusForbidden, "host not allowed: add it to admin.allowed_hosts")
		return
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
			g.refuse(w, r, "origin", http.StatusForbidden, "cross-origin requests are refused")
			return
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		g.refuse(w, r, "origin", http.StatusForbidden, "cross-origin requests are refused")
		return
	}
	if tok := g.token(); tok != "" && r.URL.Path != "/healthz" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pspf-edge"`)
			g.refuse(w, r, "token", http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

// hostAllowed reports whether a request's Host may reach the API: an IP
// address (a DNS rebinding needs a name), localhost, or an allowed name.
func (g *adminGuard) hostAllowed(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.Trim(name, "[]"), ".")
	if net.ParseIP(name) != nil || strings.EqualFold(name, "localhost") {
		return true
	}
	return slices.ContainsFunc(g.hosts, func(a string) bool { return strings.EqualFold(a, name) })
}

// refuse answers a refused request, counts it and logs the first of each
// reason in a minute.
func (g *adminGuard) refuse(w http.ResponseWriter, r *http.Request, reason string, code int, msg string) {
	if g.metrics != nil {
		g.metrics.Counter("pspf_admin_refused_total", "reason", reason).Inc()
	}
	if g.log != nil {
		g.mu.Lock()
		now := time.Now()
		first := now.Sub(g.warned[reason]) >= time.Minute
		if first {
			if g.warned == nil {
				g.warned = map[string]time.Time{}
			}
			g.warned[reason] = now
		}
		g.mu.Unlock()
		if first {
			g.log.Warn("admin: request refused (more in pspf_admin_refused_total for a minute)", "reason", reason,
				"remote", r.RemoteAddr, "host", r.Host, "path", r.URL.Path, "origin", r.Header.Get("Origin"))
		}
	}
	http.Error(w, "admin: "+msg, code)
}

// startAdmin serves h as c says; an empty address disables it. It returns
// the address it listens on (the port chosen for ":0"; an https:// URL
// with TLS; "" when disabled) and the function that
// stops the server and waits for it. Beyond loopback without a token, or
// with a token but without TLS, it logs a WARN.
func startAdmin(c runner.AdminConfig, h http.Handler, logger *slog.Logger) (func(), string, error) {
	if c.Address == "" {
		return func() {}, "", nil
	}
	ln, err := net.Listen("tcp", c.Address)
	if err != nil {
		return nil, "", fmt.Errorf("admin: listen: %w", err)
	}
	scheme := "http"
	if c.TLS.CertFile != "" {
		certs := &certReloader{certFile: c.TLS.CertFile, keyFile: c.TLS.KeyFile}
		if _, err := certs.get(nil); err != nil {
			ln.Close()
			return nil, "", fmt.Errorf("admin: tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get})
		scheme = "https"
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server failed", "err", err)
		}
	}()
	addr := ln.Addr().String()
	logger.Info("admin listening", "address", addr, "tls", scheme == "https", "token", c.Token != "")
	if !loopback(ln.Addr()) {
		switch {
		case c.Token == "":
			logger.Warn("admin API reachable beyond loopback without a token: anyone who reaches "+addr+" reads the status and metrics; set admin.token (docs/security.md)", "address", addr)
		case scheme == "http":
			logger.Warn("admin API reachable beyond loopback without TLS: the token and the status cross the network in clear; set admin.tls (docs/security.md)", "address", addr)
		}
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, published(scheme, addr), nil
}

// published is the address startAdmin returns, and the agent publishes
// for status: host:port for http, as it always was, a URL for https.
func published(scheme, addr string) string {
	if scheme == "https" {
		return "https://" + addr
	}
	return addr
}

// loopback reports whether a is a loopback address (not the unspecified
// one, which is every interface).
func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// certReloader serves the admin certificate, loading the files again when
// either changes: a renewed certificate takes effect at the next
// handshake, without a restart.
type certReloader struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp string
	cert  *tls.Certificate
}

func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	stamp := fileStamp(c.certFile) + "|" + fileStamp(c.keyFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && stamp == c.stamp {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // half-way through a renewal: keep the last good pair
		}
		return nil, err
	}
	c.cert, c.stamp = &cert, stamp
	return c.cert, nil
}

// fileStamp identifies a file's version: its size and modification time.
func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
}
