package mqtt

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	waitfor "github.com/pspf/pspf-edge/internal/wait" // the package has a wait of its own
)

// TestOfflineWithinFiveSeconds takes the broker away under a steady stream,
// once by stopping it (the connection drops, reconnects are refused) and
// once by freezing it (SIGSTOP: nothing answered), with the default
// write_timeout (30s). The sink must show as offline, with the reason, within
// 5s, and once the broker is back, online with last_error cleared; every
// record arrives.
func TestOfflineWithinFiveSeconds(t *testing.T) {
	const bound = 5 * time.Second
	for _, tc := range []struct{ mode, version string }{{"refused", "3.1.1"}, {"timeout", "3.1.1"}, {"refused", "5"}, {"timeout", "5"}} {
		mode := tc.mode
		t.Run(mode+"/v"+tc.version, func(t *testing.T) {
			m := testbroker.Start(t, testbroker.Options{})
			sub := subscribe(t, m.URL(), "out/#", nil)
			const total = 6000
			batches := make([][]agent.Record, total/10)
			for b := range batches {
				batches[b] = make([]agent.Record, 10)
				for i := range batches[b] {
					batches[b][i] = agent.Record{Key: "k", Fields: []agent.Field{agent.Int("i", int64(b*10+i))}}
				}
			}
			src := &pacedSource{ScriptSource: agenttest.NewScriptSource(batches...), every: 5 * time.Millisecond}
			reg := runner.NewRegistry()
			reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return src, nil })
			reg.Sinks["mqtt"] = Factory()
			yaml := "sources: [{script: {}}]\nsinks:\n  - mqtt: {broker: '" + m.URL() + "', topic: out/t, connect_timeout: 1s, protocol_version: \"" + tc.version + "\"}\n    retry: {initial: 20ms, max: 200ms}\n"
			spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
			if err != nil {
				t.Fatal(err)
			}
			logs := &agenttest.LogBuffer{}
			logger := logs.Logger(slog.LevelInfo)
			p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), AgentName: "gw1", OpenLog: runner.OpenDiskLog(logger), Logger: logger, ShutdownTimeout: 60 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			go func() { done <- p.Run(ctx) }()
			sink := func() runner.SinkStatus { return p.Status().Sinks[0] }
			if !waitfor.Until(30*time.Second, func() bool { return sink().Records >= 300 }) {
				t.Fatalf("got %+v, want 300 records delivered before the outage", sink())
			}
			switch mode {
			case "refused":
				m.Stop()
			case "timeout":
				m.Pause()
			}
			// The bound is the promise of the issue, not a speed figure; the
			// wait goes past it to say by how much it was missed.
			start := time.Now()
			ok := waitfor.Until(bound+5*time.Second, func() bool { return !sink().Online })
			took := time.Since(start)
			st := sink()
			t.Logf("%s: offline after %s, last_error %q", mode, took.Round(10*time.Millisecond), st.LastError)
			if !ok || took > bound || st.LastError == "" {
				t.Errorf("got offline %v after %s, last_error %q; want offline within %s, with the reason", !st.Online, took, st.LastError, bound)
			}
			switch mode {
			case "refused":
				m.Restart()
			case "timeout":
				m.Resume()
			}
			if !waitfor.Until(60*time.Second, func() bool { st := sink(); return st.Online && st.LastError == "" && st.Records > 0 }) {
				t.Errorf("after the outage: got %+v, want online with no last_error", sink())
			}
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			if st := sink(); !st.Online || st.LastError != "" || !st.OfflineSince.IsZero() || p.Status().LastError != "" {
				t.Errorf("after the drain: got %+v, pipeline last_error %q; want online, all cleared", st, p.Status().LastError)
			}
			if got := sub.wait(t, total, 20*time.Second); got != total {
				t.Errorf("got %d distinct records, want %d", got, total)
			}
			if n := logs.Count("level=WARN"); n > 2 {
				t.Errorf("got %d WARN lines for one outage, want at most 2:\n%s", n, logs.String())
			}
		})
	}
}
