package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
func adminHandler(sup *supervisor.Supervisor, metrics *runner.Metrics) http.Handler {
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
	addProfiling(mux)
	return mux
}

// startAdmin serves h on addr; an empty addr disables it. It returns the
// address it listens on (the port chosen for ":0"; "" when disabled) and the
// function that stops the server and waits for it.
func startAdmin(addr string, h http.Handler, logger *slog.Logger) (func(), string, error) {
	if addr == "" {
		return func() {}, "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("admin: listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server failed", "err", err)
		}
	}()
	logger.Info("admin listening", "address", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, ln.Addr().String(), nil
}
