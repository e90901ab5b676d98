package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/pgtest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/sources/mqtt"
)

// paced slows a ScriptSource down to one batch per every.
type paced struct {
	*agenttest.ScriptSource
	every time.Duration
}

func (p *paced) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	agent.Sleep(ctx, p.every)
	return p.ScriptSource.Read(ctx)
}

// endless is a ScriptSource that, after its batches, waits for the end
// instead of ending the pipeline.
type endless struct{ *agenttest.ScriptSource }

func (e endless) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	recs, ack, err := e.ScriptSource.Read(ctx)
	if errors.Is(err, io.EOF) {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	return recs, ack, err
}

// batches returns total records with field i = 0..total-1 in batches of n.
func batches(total, n int) [][]agent.Record {
	var out [][]agent.Record
	for b := 0; b < total; b += n {
		bt := make([]agent.Record, 0, n)
		for i := b; i < min(b+n, total); i++ {
			bt = append(bt, agent.Record{Key: fmt.Sprintf("dev-%d", i%4), Fields: []agent.Field{agent.Int("i", int64(i)), agent.Float("temp", float64(i%50))}})
		}
		out = append(out, bt)
	}
	return out
}

// pipeline runs src into a postgres sink configured by sinkYAML (the
// mapping under `postgres:`), with a recording dead-letter sink, on a disk
// log; it returns the pipeline, the dead letters, a channel with Run's
// result and the function that stops it.
func pipeline(t *testing.T, src agent.Source, sinkYAML string) (*runner.Pipeline, *agenttest.RecordingSink, <-chan error, context.CancelFunc) {
	t.Helper()
	dead := &agenttest.RecordingSink{}
	reg := runner.NewRegistry()
	none := func() *struct{} { return &struct{}{} }
	reg.Sources["script"] = agent.Typed[agent.Source]("test", none, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
	reg.Sinks["rec"] = agent.Typed[agent.Sink]("test", none, func(*struct{}, agent.Env) (agent.Sink, error) { return dead, nil })
	reg.Sinks["postgres"] = Factory()
	yaml := "sources: [{script: {}}]\nsinks:\n  - postgres: " + sinkYAML + "\n    retry: {initial: 20ms, max: 200ms}\n    batch: {max_records: 500}\ndead_letter: {rec: {}}\n"
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	go func() { done <- p.Run(ctx) }()
	return p, dead, done, cancel
}

// TestServerRestartMidStream stops the server (fast shutdown: sessions
// ended with admin_shutdown) and later crashes it (immediate shutdown,
// crash recovery on start) while records stream in. The sink must show
// offline with the reason (and never the password), and once the server
// is back every record must be in the table exactly once, counted by
// payload.
func TestServerRestartMidStream(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	url := srv.URL("", "sslmode=disable")
	c := db(t, url)
	const total = 6000
	src := &paced{ScriptSource: agenttest.NewScriptSource(batches(total, 20)...), every: 5 * time.Millisecond}
	p, dead, done, _ := pipeline(t, src, fmt.Sprintf(`{url: '%s', table: stream, create_table: true, columns: [{name: i, type: int}, {name: temp, type: float}, {name: device, field: _key}]}`, url))
	sink := func() runner.SinkStatus { return p.Status().Sinks[0] }
	rows := func() int64 {
		var n int64
		if err := c.QueryRow(context.Background(), "SELECT count(*) FROM stream").Scan(&n); err != nil {
			return -1 // the server is down, or the table not there yet
		}
		return n
	}
	for _, outage := range []struct {
		at   int64
		name string
		stop func()
	}{{1000, "stop", srv.Stop}, {3000, "crash", srv.Crash}} {
		agenttest.Eventually(t, time.Minute, fmt.Sprintf("%d rows before the %s", outage.at, outage.name), func() bool { return rows() >= outage.at }, nil)
		outage.stop()
		agenttest.Eventually(t, 30*time.Second, "the sink offline", func() bool { return !sink().Online }, nil)
		st := sink()
		if st.LastError == "" {
			t.Errorf("%s: offline without a reason", outage.name)
		}
		noSecret(t, "last_error", st.LastError)
		noSecret(t, "the pipeline's last_error", p.Status().LastError)
		t.Logf("%s: offline, last_error %q", outage.name, st.LastError)
		srv.Restart()
		c = db(t, url)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if st := sink(); !st.Online || st.LastError != "" {
		t.Errorf("after the drain: got %+v, want online, last_error cleared", st)
	}
	lost, dups, alien := tally(t, c, "stream", total)
	if lost != 0 || dups != 0 || alien != 0 {
		t.Errorf("got lost %d, duplicates %d, alien %d; want 0, 0, 0", lost, dups, alien)
	}
	if got := rows(); got != total {
		t.Errorf("got %d rows, want %d", got, total)
	}
	if n := len(dead.Records()); n != 0 {
		t.Errorf("got %d dead letters, want none", n)
	}
}

// TestBadRowsReachDeadLetters runs bad rows through a pipeline: they reach
// the dead-letter sink with the server's reason, the rest of their batches
// reach the table, and the sink stays online.
func TestBadRowsReachDeadLetters(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	url := srv.URL("", "sslmode=disable")
	c := db(t, url)
	exec(t, c, "CREATE TABLE checked (id text PRIMARY KEY, time timestamptz NOT NULL, i bigint, temp double precision CHECK (temp < 1000))")
	const total = 1000
	bs := batches(total, 100)
	badAt := map[int64]bool{}
	for b := range bs {
		if b%3 == 0 { // one bad row in every third batch
			bs[b][b%100].Set(agent.Float("temp", 5000))
			badAt[bs[b][b%100].Field("i").Int] = true
		}
	}
	src := endless{agenttest.NewScriptSource(bs...)}
	p, dead, done, stop := pipeline(t, src, fmt.Sprintf(`{url: '%s', table: checked, columns: [{name: i, type: int}, {name: temp, type: float}]}`, url))
	agenttest.Eventually(t, time.Minute, "every record written or dead-lettered", func() bool {
		return p.Status().Sinks[0].Records == uint64(total-len(badAt)) && len(dead.Records()) >= len(badAt)
	}, nil)
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	got := dead.Records()
	if len(got) != len(badAt) {
		t.Fatalf("got %d dead letters, want %d", len(got), len(badAt))
	}
	for _, r := range got {
		if f := r.Field("i"); f == nil || !badAt[f.Int] {
			t.Errorf("dead letter %+v is not one of the bad rows", r)
		}
		if e := r.Field(runner.DeadErrorField); e == nil || !strings.Contains(e.Str, "violates check constraint") || !strings.Contains(e.Str, "23514") {
			t.Errorf("dead letter %+v: want the server's reason with its SQLSTATE", r)
		}
	}
	if n := count(t, c, "SELECT count(*) FROM checked"); n != total-int64(len(badAt)) {
		t.Errorf("got %d rows, want %d", n, total-len(badAt))
	}
	if n := count(t, c, "SELECT count(*) FROM checked WHERE temp >= 1000"); n != 0 {
		t.Errorf("got %d bad rows in the table", n)
	}
	if st := p.Status().Sinks[0]; !st.Online {
		t.Errorf("got %+v, want online", st)
	}
}

// TestTLS connects to a server that takes TLS connections only, with the
// CA named in tls.ca_file and the host verified (sslmode=verify-full by
// default with TLS files); without the CA the certificate is refused, a
// setup error.
func TestTLS(t *testing.T) {
	certs := testbroker.NewCerts(t)
	srv := pgtest.Start(t, pgtest.Options{TLS: &pgtest.TLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, TLSOnly: true}})
	ctx := context.Background()
	cfg := config(srv.URL(""), "secure", readingCols...)
	cfg.TLS.CAFile = certs.CAFile
	s := newSink(t, cfg, agent.Env{})
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect with the CA: %v", err)
	}
	if err := s.Write(ctx, readings(0, 50)); err != nil {
		t.Fatal(err)
	}
	c := db(t, srv.URL("", "sslmode=verify-full", "sslrootcert="+certs.CAFile))
	var ssl bool
	if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the test's own connection: ssl %v, %v", ssl, err)
	}
	if n := count(t, c, "SELECT count(*) FROM secure"); n != 50 {
		t.Errorf("got %d rows, want 50", n)
	}
	if n := count(t, c, "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'pspf-edge p'"); n != 1 {
		t.Errorf("got %d TLS connections of the sink, want 1", n)
	}

	plain := config(srv.URL("", "sslmode=disable"), "secure", readingCols...)
	if err := newSink(t, plain, agent.Env{}).Connect(ctx); err == nil || !agent.IsPermanent(err) {
		t.Errorf("without TLS: got %v, want a permanent error (the server takes TLS only)", err)
	}
	noCA := config(srv.URL("", "sslmode=verify-full"), "secure", readingCols...)
	err := newSink(t, noCA, agent.Env{}).Connect(ctx)
	if err == nil || !agent.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: got %v, want a permanent certificate error", err)
	}
	if err != nil {
		noSecret(t, "the error", err.Error())
	}
}

// TestREADMESamples parses every sample of the README.
func TestREADMESamples(t *testing.T) {
	t.Setenv("PG_PASSWORD", "secret")
	reg := runner.NewRegistry()
	reg.Sinks["postgres"] = Factory()
	reg.Sources["mqtt"] = mqtt.Factory()
	specs := agenttest.CheckREADMESamples(t, "README.md", reg)
	if len(specs) == 0 {
		t.Fatal("no sample parsed")
	}
}
