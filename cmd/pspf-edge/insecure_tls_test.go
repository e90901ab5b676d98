package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// TestInsecureTLSWarnsForEveryConnector builds, with the agent's registry,
// a pipeline for each connector that has a tls block, with
// insecure_skip_verify: true: each gets one WARN at start naming it. The
// connectors are found in the registry, so a new one with a tls block that
// this test does not cover fails it.
func TestInsecureTLSWarnsForEveryConnector(t *testing.T) {
	reg := newRegistry()
	const tls = "tls: {insecure_skip_verify: true}"
	cases := map[string]string{
		"sources.mqtt":  "sources:\n  - mqtt: {brokers: [\"ssl://127.0.0.1:1\"], subscriptions: [{topic: a, qos: 1}], " + tls + "}\nsinks:\n  - console: {}\n",
		"sources.kafka": "sources:\n  - kafka: {brokers: [\"127.0.0.1:1\"], topics: [up], " + tls + "}\nsinks:\n  - console: {}\n",
		"sinks.mqtt":    "sources:\n  - simulate: {}\nsinks:\n  - mqtt: {broker: \"ssl://127.0.0.1:1\", topic: t, " + tls + "}\n",
		"sinks.kafka":   "sources:\n  - simulate: {}\nsinks:\n  - kafka: {brokers: [\"127.0.0.1:1\"], topic: up, " + tls + "}\n",
		"sinks.http":    "sources:\n  - simulate: {}\nsinks:\n  - http: {url: \"https://127.0.0.1:1/\", " + tls + "}\n",
	}
	var withTLS []string
	for name, f := range reg.Sources {
		if hasTLS(reflect.TypeOf(f.Config())) {
			withTLS = append(withTLS, "sources."+name)
		}
	}
	for name, f := range reg.Sinks {
		if hasTLS(reflect.TypeOf(f.Config())) {
			withTLS = append(withTLS, "sinks."+name)
		}
	}
	for name, f := range reg.Operators {
		if hasTLS(reflect.TypeOf(f.Config())) {
			withTLS = append(withTLS, "operators."+name)
		}
	}
	slices.Sort(withTLS)
	if len(withTLS) < 4 {
		t.Fatalf("found tls blocks in %v only, want the mqtt, kafka and http connectors", withTLS)
	}
	for _, c := range withTLS {
		t.Run(c, func(t *testing.T) {
			yaml, ok := cases[c]
			if !ok {
				t.Fatalf("%s has a tls block (agent.TLSConfig) but no case in this test: add one", c)
			}
			spec, err := reg.ParsePipeline("p.yaml", []byte(yaml), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			var logs agenttest.LogBuffer
			p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: t.TempDir(), OpenLog: agenttest.Open(),
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("new pipeline: %v", err)
			}
			typ := c[strings.IndexByte(c, '.')+1:]
			kind := c[:strings.IndexByte(c, '.')]
			out := logs.String()
			if n := strings.Count(out, "level=WARN"); n != 1 || !strings.Contains(out, "insecure_skip_verify is on") ||
				!strings.Contains(out, "component="+typ) || !strings.Contains(out, "setting="+kind+"[0]."+typ+".tls.insecure_skip_verify") {
				t.Errorf("got %d WARN lines at start:\n%s\nwant one insecure_skip_verify warning naming %s", n, out, c)
			}
			// Run on an ended context (it closes what the constructors
			// opened): the connection attempt adds no second warning.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			p.Run(ctx)
			if n := strings.Count(logs.String(), "insecure_skip_verify is on"); n != 1 {
				t.Errorf("got %d insecure_skip_verify warnings after a run, want 1:\n%s", n, logs.String())
			}
		})
	}
}

// hasTLS reports whether a config type holds an agent.TLSConfig.
func hasTLS(t reflect.Type) bool {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type) bool
	walk = func(t reflect.Type) bool {
		if seen[t] {
			return false
		}
		seen[t] = true
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			return walk(t.Elem())
		case reflect.Struct:
			if t == reflect.TypeFor[agent.TLSConfig]() {
				return true
			}
			for i := range t.NumField() {
				if t.Field(i).IsExported() && walk(t.Field(i).Type) {
					return true
				}
			}
		}
		return false
	}
	return walk(t)
}

// TestInsecureTLSWarnsForTheFleet: the fleet channel's tls block and the
// heartbeat sink's, with insecure_skip_verify, get one WARN each as the
// agent sets them up, naming the setting.
func TestInsecureTLSWarnsForTheFleet(t *testing.T) {
	dir := t.TempDir()
	_, pub, err := fleet.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "k.pub"), string(pub))
	if err := os.Mkdir(filepath.Join(dir, "pipelines"), 0o750); err != nil {
		t.Fatal(err)
	}
	agentFile := filepath.Join(dir, "agent.yaml")
	writeFile(t, agentFile, "data_dir: "+filepath.Join(dir, "data")+"\npipelines_dir: "+filepath.Join(dir, "pipelines")+"\n"+
		"fleet:\n  channel: https\n  public_keys: ["+filepath.Join(dir, "k.pub")+"]\n"+
		"  https: {url: \"https://127.0.0.1:1/{target}\", tls: {insecure_skip_verify: true}}\n"+
		"  heartbeat: {sink: {http: {url: \"https://127.0.0.1:1/hb\", tls: {insecure_skip_verify: true}}}}\n")
	cfg, err := loadAgentConfig(agentFile)
	if err != nil {
		t.Fatalf("agent file: %v", err)
	}
	var logs agenttest.LogBuffer
	log := logs.Logger(slog.LevelInfo)
	reg, metrics, secrets := newRegistry(), runner.NewMetrics(), new(agent.Secrets)
	sup := supervisor.New(supervisor.Deps{Config: cfg, Registry: reg, Metrics: metrics, Logger: log, Level: new(slog.LevelVar)})
	_, ap, err := newFleet(cfg, sup, metrics, log, secrets)
	if err != nil {
		t.Fatalf("fleet: %v", err)
	}
	if _, err := newHeartbeats(cfg, reg, sup, ap, metrics, log, secrets); err != nil {
		t.Fatalf("heartbeats: %v", err)
	}
	for _, want := range []string{"component=fleet setting=fleet.https.tls.insecure_skip_verify", "component=fleet.heartbeat.sink setting=fleet.heartbeat.sink.http.tls.insecure_skip_verify"} {
		if n := logs.Count("level=WARN", "insecure_skip_verify is on", want); n != 1 {
			t.Errorf("got %d warnings with %q, want 1:\n%s", n, want, logs.String())
		}
	}
	if n := logs.Count("insecure_skip_verify is on"); n != 2 {
		t.Errorf("got %d insecure_skip_verify warnings, want 2:\n%s", n, logs.String())
	}
}
