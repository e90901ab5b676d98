package supervisor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// delivered is how many log records have reached the recorder.
func (r *recorder) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.logSeqs)
}

// setupFailSource's Connect fails with a setup error that retrying cannot
// fix, as a connector marks it (agent.Permanent).
type setupFailSource struct{}

func (setupFailSource) Connect(context.Context) error {
	return agent.Permanent(errors.New("setupfail source: setup refused"))
}
func (setupFailSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	<-ctx.Done()
	return nil, nil, ctx.Err()
}
func (setupFailSource) Close(context.Context) error { return nil }

func withSetupFail(reg *runner.Registry) *runner.Registry {
	type cfg struct{}
	reg.Sources["setupfail"] = agent.Typed[agent.Source]("test source whose Connect fails for good", func() *cfg { return &cfg{} }, func(*cfg, agent.Env) (agent.Source, error) {
		return setupFailSource{}, nil
	})
	return reg
}

// TestReloadKeepsDeliveringWhatCannotRun: a reload to a file that cannot run
// never stops delivery. What is known from the file and the files it names
// (an unknown function, a missing CA file, a certificate and key that do not
// match) is refused like any invalid file, and the running generation never
// stops; a generation whose component fails to set up at connect is rolled
// back to the previous config. Each is reported (log, metric, status), and
// the readings are counted by payload across all of it: none is lost.
func TestReloadKeepsDeliveringWhatCannotRun(t *testing.T) {
	certs := testbroker.NewCerts(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	writeFile(t, garbage, "this is not a certificate\n")
	rec := newRecorder()
	reg := withSetupFail(testRegistry(map[string]*recorder{"a": rec}))
	h := startHarness(t, reg, map[string]string{"a.yaml": reloadedPipeline(0, 0)}, nil)
	h.waitFor("generation 1", func() bool { return h.view("a").State == StateRunning })
	started := h.view("a").StartedAt

	const base = "sources:\n  - simulate: {sensors: 2, rate: 100, format: fields, shape: steady}\n%soperators:\n  - map: {set: {cfg: \"1\"}}\n%ssinks:\n  - record: {id: a}\n%s"
	cases := []struct {
		name, body, want string
		rollback         bool
	}{
		{"unknown function", fmt.Sprintf(base, "", "  - filter: {expr: \"nosuchfunc(temp) > 1\"}\n", ""),
			"operators[1].filter.expr: invalid expression: column 1: unknown function nosuchfunc", false},
		{"missing CA file", fmt.Sprintf(base, "  - mqtt: {brokers: [\"ssl://127.0.0.1:1\"], subscriptions: [{topic: a/#}], tls: {ca_file: /nonexistent/ca.pem}}\n", "", ""),
			"sources[1].mqtt.tls.ca_file: cannot read the CA file: open /nonexistent/ca.pem: no such file or directory", false},
		{"bad client certificate", fmt.Sprintf(base, "", "", "  - http: {url: \"https://127.0.0.1:1/\", tls: {cert_file: "+garbage+", key_file: "+certs.ClientKey+"}}\n"),
			"sinks[1].http.tls.cert_file: the certificate " + garbage, false},
		{"setup error at connect", fmt.Sprintf(base, "  - setupfail: {}\n", "", ""),
			"setupfail source: setup refused", true},
	}
	for i, c := range cases {
		before := rec.delivered()
		saveTempRename(t, h.dir, "a.yaml", c.body, i)
		h.waitFor(c.name+": the failure reported", func() bool {
			v := h.view("a")
			return v.ReloadFailures == uint64(i+1) && strings.Contains(v.LastReloadError, c.want) && v.State == StateRunning
		})
		v := h.view("a")
		if v.Generation != 1 {
			t.Errorf("%s: generation %d runs, want 1 (the previous config)", c.name, v.Generation)
		}
		if !c.rollback && !v.StartedAt.Equal(started) {
			t.Errorf("%s: the running generation was restarted (started %v, was %v); an invalid file must not stop it", c.name, v.StartedAt, started)
		}
		h.waitFor(c.name+": deliveries after the failure", func() bool { return rec.delivered() > before+100 })
		started = h.view("a").StartedAt
	}
	if err := h.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	n := rec.check(t, "a")
	logs := h.logs.String()
	if got := strings.Count(logs, "pipeline config invalid; the running generation stays"); got != 3 {
		t.Errorf("log has %d 'pipeline config invalid' lines, want 3", got)
	}
	if !strings.Contains(logs, "pipeline reload failed; the previous config runs again") {
		t.Errorf("log has no rollback line:\n%s", logs)
	}
	t.Logf("%d log records delivered across 4 refused reloads, lost 0", n)
}
