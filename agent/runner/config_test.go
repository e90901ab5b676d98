package runner_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/buffer"
	"github.com/pspf/pspf-edge/sinks/console"
	"github.com/pspf/pspf-edge/sinks/file"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func testRegistry() *runner.Registry {
	r := runner.NewRegistry()
	r.Sources["simulate"] = simulate.Factory()
	r.Sinks["console"] = console.Factory()
	r.Sinks["file"] = file.Factory()
	return r
}

func parse(t *testing.T, text string) (*runner.PipelineSpec, error) {
	t.Helper()
	return testRegistry().ParsePipeline("pipelines/x.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
}

func TestParsePipelineDefaultsAndNames(t *testing.T) {
	spec, err := parse(t, `
sources:
  - simulate: {sensors: 2}
sinks:
  - console:
  - console: {format: ndjson}
  - file: {path: /tmp/x}
    name: archive
    retry: {initial: 1s, max: 10s}
buffer: {max_bytes: 2MiB, segment_bytes: 1MiB, overflow: drop_oldest}
`)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "x" {
		t.Errorf("got name %q, want x", spec.Name)
	}
	var names []string
	for _, s := range spec.Sinks {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "console,console-2,archive" {
		t.Errorf("got sink names %s, want console,console-2,archive", got)
	}
	if spec.Sinks[2].Sink.Retry.Initial != time.Second || spec.Sinks[2].Sink.Retry.Max != 10*time.Second {
		t.Errorf("got retry %+v", spec.Sinks[2].Sink.Retry)
	}
	if spec.Sinks[0].Sink.Batch.MaxRecords != 500 {
		t.Errorf("got batch %+v, want the default 500 records", spec.Sinks[0].Sink.Batch)
	}
	if spec.Buffer.MaxBytes != 2<<20 || spec.Buffer.Overflow != "drop_oldest" || spec.Buffer.Sync != "interval" {
		t.Errorf("got buffer %+v", spec.Buffer)
	}
	if c := spec.Sources[0].Config.(*simulate.Config); c.Sensors != 2 || c.Rate != 1 {
		t.Errorf("got %+v, want sensors 2 and the default rate 1", c)
	}
	if len(spec.Hash) != 64 {
		t.Errorf("got hash %q, want 64 hex digits", spec.Hash)
	}
}

func TestParsePipelineErrors(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"unknown key", "sources: [{simulate: {}}]\nsinks: [{console: {}}]\nsinkz: []\n", `pipelines/x.yaml:3: sinkz: unknown key; expected one of:`},
		{"enum", "sources: [{simulate: {}}]\nsinks:\n  - console:\n      format: html\n", `pipelines/x.yaml:4: sinks[0].console.format: must be text or ndjson, got "html"`},
		{"empty path", "sources: [{simulate: {}}]\nsinks:\n  - file:\n      path: \"\"\n", `pipelines/x.yaml:4: sinks[0].file.path: must not be empty`},
		{"list expected", "sources: {simulate: {}}\nsinks: [{console: {}}]\n", `pipelines/x.yaml:1: sources: must be a list, got a mapping`},
		{"duplicate key", "sources: [{simulate: {}}]\nsinks: [{console: {}}]\nsinks: []\n", `sinks: key appears twice`},
		{"duration", "sources: [{simulate: {period: 5 minutes}}]\nsinks: [{console: {}}]\n", `sources[0].simulate.period: must be a duration like 500ms, 10s or 5m, got "5 minutes"`},
		{"duplicate names", "sources: [{simulate: {}}]\nsinks: [{console: {}, name: a}, {file: {path: /x}, name: a}]\n", `name "a" is used twice`},
		{"env unset", "sources: [{simulate: {prefix: \"${PSPF_NOPE_NOT_SET}\"}}]\nsinks: [{console: {}}]\n", `environment variable PSPF_NOPE_NOT_SET is not set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.text)
			var ces agent.ConfigErrors
			if !errors.As(err, &ces) {
				t.Fatalf("got %v, want ConfigErrors", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

// TestUnsetVariableIsOneError: a value whose ${VAR} is not set gets that
// error alone, not also the rule its unsubstituted text breaks.
func TestUnsetVariableIsOneError(t *testing.T) {
	_, err := parse(t, "sources: [{simulate: {}}]\nsinks:\n  - console:\n      format: \"${PSPF_NOPE_NOT_SET}\"\n")
	var ces agent.ConfigErrors
	if !errors.As(err, &ces) {
		t.Fatalf("got %v, want ConfigErrors", err)
	}
	if len(ces) != 1 || !strings.Contains(ces[0].Error(), "sinks[0].console.format: environment variable PSPF_NOPE_NOT_SET is not set") {
		t.Errorf("got %d errors:\n%v\nwant only: environment variable PSPF_NOPE_NOT_SET is not set", len(ces), err)
	}
}

// TestListExpectedIsOneError: a mapping where a list of components is
// expected gets that error (and the missing list's), not also one for each
// of its keys and values as if they were list entries.
func TestListExpectedIsOneError(t *testing.T) {
	_, err := parse(t, "sources: {simulate: {}}\nsinks: [{console: {}}]\n")
	var ces agent.ConfigErrors
	if !errors.As(err, &ces) {
		t.Fatalf("got %v, want ConfigErrors", err)
	}
	if strings.Contains(err.Error(), "sources[") || !strings.Contains(err.Error(), "sources: must be a list, got a mapping") {
		t.Errorf("got:\n%v\nwant `sources: must be a list, got a mapping` and no error about sources[0] or sources[1]", err)
	}
}

// TestBufferValidationMatchesOpen checks that a pipeline's buffer validates
// exactly when the buffer package would open a log with it, and that each
// refusal is one error at the offending key.
func TestBufferValidationMatchesOpen(t *testing.T) {
	const head = "sources: [{simulate: {}}]\nsinks: [{console: {}}]\nbuffer:\n"
	tests := []struct{ name, buffer, want string }{
		{"defaults", "  overflow: block\n", ""},
		{"cap twice the segment", "  max_bytes: 2MiB\n  segment_bytes: 1MiB\n", ""},
		{"cap below twice the default segment", "  max_bytes: 8MiB\n",
			`pipelines/x.yaml:4: buffer.max_bytes: must be at least 2×segment_bytes (+memory_bytes for memory kind), got "8MiB" with segment_bytes 16MiB (from the defaults)`},
		{"cap below twice the segment", "  segment_bytes: 1MiB\n  max_bytes: 1.5MiB\n",
			`pipelines/x.yaml:5: buffer.max_bytes: must be at least 2×segment_bytes (+memory_bytes for memory kind), got "1.5MiB" with segment_bytes "1MiB"`},
		{"default cap below a large segment", "  segment_bytes: 200MiB\n",
			`pipelines/x.yaml:4: buffer.max_bytes: must be at least 2×segment_bytes (+memory_bytes for memory kind), got 256MiB (from the defaults) with segment_bytes "200MiB"`},
		{"memory counts for memory kind", "  type: memory\n  max_bytes: 3MiB\n  segment_bytes: 1MiB\n  memory_bytes: 2MiB\n",
			`pipelines/x.yaml:5: buffer.max_bytes: must be at least 2×segment_bytes (+memory_bytes for memory kind), got "3MiB" with segment_bytes "1MiB" and memory_bytes "2MiB"`},
		{"memory ignored for disk", "  max_bytes: 3MiB\n  segment_bytes: 1MiB\n  memory_bytes: 2MiB\n", ""},
		{"segment too large", "  segment_bytes: 2GiB\n  max_bytes: 8GiB\n",
			`pipelines/x.yaml:4: buffer.segment_bytes: must be between 1 KiB and 1 GiB, got "2GiB"`},
		// One error a key: the agent's own rule, not the buffer's as well.
		{"cap below 1MiB", "  max_bytes: 512KiB\n", `pipelines/x.yaml:4: buffer.max_bytes: must be at least 1MiB, got "512KiB"`},
		// A value that did not decode stays at its default: no rule is
		// checked against it.
		{"ack interval", "  ack_interval: 10s\n", ""},
		{"ack interval zero", "  ack_interval: 0s\n", `pipelines/x.yaml:4: buffer.ack_interval: must be positive, got "0s"`},
		{"ack interval below 1ms", "  ack_interval: 500us\n", `pipelines/x.yaml:4: buffer.ack_interval: must be at least 1ms, got "500us"`},
		{"cap undecodable", "  max_bytes: lots\n  segment_bytes: 200MiB\n", `pipelines/x.yaml:4: buffer.max_bytes: must be a size like 512KiB, 64MiB or 1GiB, got "lots"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := parse(t, head+tt.buffer)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				o := runner.BufferOptions(spec.Buffer, nil)
				if want := 10 * time.Second; strings.Contains(tt.buffer, "ack_interval") && o.AckInterval != want {
					t.Fatalf("ack_interval %v reached the log as %v", want, o.AckInterval)
				}
				l, err := buffer.Open(t.TempDir(), o)
				if err != nil {
					t.Fatalf("validated, but buffer.Open refused it: %v", err)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("got:\n%v\nwant:\n%s", err, tt.want)
			}
		})
	}
}

func TestParseCheckpoint(t *testing.T) {
	const body = "sources: [{simulate: {}}]\nsinks: [{console: {}}]\n"
	defaults := runner.Defaults{Buffer: runner.DefaultBufferConfig(), Checkpoint: runner.CheckpointConfig{Interval: 30 * time.Second}}
	tests := []struct {
		name, text string
		want       time.Duration
	}{
		{"unset takes the agent default", body, 30 * time.Second},
		{"file overrides", body + "checkpoint: {interval: 5s}\n", 5 * time.Second},
		{"lowest", body + "checkpoint:\n  interval: 100ms\n", 100 * time.Millisecond},
		{"highest", body + "checkpoint: {interval: 1h}\n", time.Hour},
		{"empty block", body + "checkpoint: {}\n", 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := testRegistry().ParsePipeline("pipelines/x.yaml", []byte(tt.text), defaults)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Checkpoint.Interval != tt.want {
				t.Errorf("got interval %s, want %s", spec.Checkpoint.Interval, tt.want)
			}
		})
	}
	errs := []struct{ name, text, want string }{
		{"zero", body + "checkpoint:\n  interval: 0s\n", `pipelines/x.yaml:4: checkpoint.interval: must be between 100ms and 1h0m0s, got "0s"`},
		{"too short", body + "checkpoint: {interval: 10ms}\n", `pipelines/x.yaml:3: checkpoint.interval: must be between 100ms and 1h0m0s, got "10ms"`},
		{"too long", body + "checkpoint: {interval: 2h}\n", `pipelines/x.yaml:3: checkpoint.interval: must be between 100ms and 1h0m0s, got "2h"`},
		{"negative", body + "checkpoint: {interval: -5s}\n", `pipelines/x.yaml:3: checkpoint.interval: must be a duration like 500ms, 10s or 5m, got "-5s"`},
		{"not a duration", body + "checkpoint: {interval: often}\n", `checkpoint.interval: must be a duration like 500ms, 10s or 5m, got "often"`},
		{"unknown key", body + "checkpoint: {every: 5s}\n", `pipelines/x.yaml:3: checkpoint.every: unknown key; expected one of: interval`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testRegistry().ParsePipeline("pipelines/x.yaml", []byte(tt.text), defaults)
			var ces agent.ConfigErrors
			if !errors.As(err, &ces) {
				t.Fatalf("got %v, want ConfigErrors", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

func TestParseState(t *testing.T) {
	const body = "sources: [{simulate: {}}]\nsinks: [{console: {}}]\n"
	defaults := runner.Defaults{Buffer: runner.DefaultBufferConfig()}
	tests := []struct{ name, text, want string }{
		{"unset is bbolt", body, runner.StoreBbolt},
		{"empty block is bbolt", body + "state: {}\n", runner.StoreBbolt},
		{"bbolt", body + "state: {store: bbolt}\n", runner.StoreBbolt},
		{"memory", body + "state:\n  store: memory\n", runner.StoreMemory},
		{"kafka", body + "state: {store: kafka, changelog: rollup-state}\n", runner.StoreKafka},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := testRegistry().ParsePipeline("pipelines/x.yaml", []byte(tt.text), defaults)
			if err != nil {
				t.Fatal(err)
			}
			if spec.State.Store != tt.want {
				t.Errorf("got store %q, want %q", spec.State.Store, tt.want)
			}
		})
	}
	errs := []struct{ name, text, want string }{
		{"unknown store", body + "state: {store: redis}\n", `pipelines/x.yaml:3: state.store: must be bbolt, memory or kafka, got "redis"`},
		{"empty store", body + "state: {store: \"\"}\n", `pipelines/x.yaml:3: state.store: must be bbolt, memory or kafka, got ""`},
		{"unknown key", body + "state: {cache: 1MiB}\n", `pipelines/x.yaml:3: state.cache: unknown key; expected one of: changelog, store`},
		{"kafka without changelog", body + "state: {store: kafka}\n", `pipelines/x.yaml:3: state.store: kafka needs changelog`},
		{"changelog without kafka", body + "state: {store: bbolt, changelog: x}\n", `pipelines/x.yaml:3: state.changelog: only with store: kafka`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testRegistry().ParsePipeline("pipelines/x.yaml", []byte(tt.text), defaults)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

// TestAgentDefaultsBufferValidated checks the buffer rule on the agent file's
// defaults, which every pipeline starts from.
func TestAgentDefaultsBufferValidated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("defaults:\n  buffer:\n    max_bytes: 4MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runner.LoadAgentConfig(path)
	if want := path + `:3: defaults.buffer.max_bytes: must be at least 2×segment_bytes`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want an error starting %q", err, want)
	}
}

// TestAdminConfigValidated: the admin token is long enough and printable
// (what ${file:} reads has its newline trimmed), the certificate and key
// go together and load, allowed_hosts are names; each problem at its path.
func TestAdminConfigValidated(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"good", "admin:\n  token: ${file:" + tok + "}\n  allowed_hosts: [gw-17.local]\n", ""},
		{"short token", "admin:\n  token: abc\n", ":2: admin.token: must be at least 16 characters (a short token can be guessed), got 3"},
		{"token with a space", "admin:\n  token: \"0123456789 abcdefg\"\n", ":2: admin.token: must be printable characters without spaces"},
		{"cert without key", "admin:\n  tls: {cert_file: /x.pem}\n", ":2: admin.tls: cert_file and key_file go together"},
		{"missing cert", "admin:\n  tls: {cert_file: /nonexistent/x.pem, key_file: /nonexistent/k.pem}\n", ":2: admin.tls.cert_file: open /nonexistent/x.pem: no such file or directory"},
		{"host with port", "admin:\n  allowed_hosts: [\"gw:8377\"]\n", `:2: admin.allowed_hosts[0]: must be a host name like gw-17.local, without a port, got "gw:8377"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "agent.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := runner.LoadAgentConfig(path)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want == "" && cfg.Admin.Token != "0123456789abcdef":
				t.Errorf("token %q, want the file's content without its newline", cfg.Admin.Token)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), path+tc.want)):
				t.Errorf("got %v, want %s%s", err, path, tc.want)
			}
		})
	}
}

func TestSecretsSubstitutedButNeverPrinted(t *testing.T) {
	t.Setenv("PSPF_PREFIX", "dev-")
	spec, err := parse(t, "sources: [{simulate: {prefix: \"${PSPF_PREFIX}x\", field: \"$${literal}\"}}]\nsinks: [{console: {}}]\n")
	if err != nil {
		t.Fatal(err)
	}
	c := spec.Sources[0].Config.(*simulate.Config)
	if c.Prefix != "dev-x" || c.Field != "${literal}" {
		t.Errorf("got prefix %q field %q, want dev-x and ${literal}", c.Prefix, c.Field)
	}
	t.Setenv("PSPF_SENSORS", "lots-of-secret")
	_, err = parse(t, "sources: [{simulate: {sensors: \"${PSPF_SENSORS}\"}}]\nsinks: [{console: {}}]\n")
	if err == nil || strings.Contains(err.Error(), "lots-of-secret") || !strings.Contains(err.Error(), "${PSPF_SENSORS}") {
		t.Errorf("got %v, want an error quoting ${PSPF_SENSORS}, not its value", err)
	}
}

func TestSchemaMentionsEveryComponent(t *testing.T) {
	b, err := json.Marshal(testRegistry().Schema())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"simulate"`, `"console"`, `"file"`, `"overflow"`, `"drop_oldest"`, `"checkpoint"`, `"interval"`,
		// The rule tags of simulate: sensors between 1 and 1000000, rate
		// above 0.
		`"sensors":{"description":"number of simulated sensors","maximum":1000000,"minimum":1,"type":"integer"}`,
		`"exclusiveMinimum":0`, `"state"`, `"store"`, `"memory"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("schema lacks %s", want)
		}
	}
}

// FuzzParsePipeline feeds arbitrary bytes to the config loader: errors, never
// a panic.
func FuzzParsePipeline(f *testing.F) {
	f.Add([]byte("sources: [{simulate: {}}]\nsinks: [{console: {}}]\n"))
	f.Add([]byte("sources:\n  - simulate: {sensors: 3, rate: 2.5, period: 1m}\noperators: []\nsinks:\n  - file: {path: x, max_bytes: 1MiB}\n    retry: {initial: 1s}\nbuffer: {max_bytes: 2MiB}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("sinks: &s [{console: {}}]\nsources: *s\n"))
	f.Add([]byte("sources: [{simulate: ${X}}]"))
	f.Add([]byte("{{{"))
	reg := testRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := reg.ParsePipeline("f.yaml", data, runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil && (spec == nil || len(spec.Sources) == 0 || len(spec.Sinks) == 0) {
			t.Fatalf("no error but spec %+v", spec)
		}
	})
}

func TestAgentMemorySettings(t *testing.T) {
	tests := []struct {
		name, yaml string
		limit      agent.ByteSize
		gc         int
		procs      int // 0 in a case without it means the default
		err        string
	}{
		{name: "defaults", yaml: "name: a\n", limit: runner.DefaultMemoryLimit, gc: runner.DefaultGCPercent},
		{name: "set", yaml: "memory_limit: 24MiB\ngc_percent: 50\n", limit: 24 << 20, gc: 50},
		{name: "no limit", yaml: "memory_limit: 0\n", limit: 0, gc: runner.DefaultGCPercent},
		{name: "only the limit", yaml: "memory_limit: 16MiB\ngc_percent: -1\n", limit: 16 << 20, gc: -1},
		{name: "limit too small", yaml: "memory_limit: 1MiB\n", err: `:1: memory_limit: must be 0 (none) or at least 4MiB, got "1MiB"`},
		{name: "gc zero", yaml: "gc_percent: 0\n", err: `:1: gc_percent: must be -1 (off) or between 1 and 1000, got "0"`},
		{name: "gc off without limit", yaml: "memory_limit: 0\ngc_percent: -1\n", err: `:2: gc_percent: -1 needs a memory_limit`},
		{name: "procs", yaml: "max_procs: 4\n", limit: runner.DefaultMemoryLimit, gc: runner.DefaultGCPercent, procs: 4},
		{name: "all procs", yaml: "max_procs: 0\n", limit: runner.DefaultMemoryLimit, gc: runner.DefaultGCPercent, procs: 0},
		{name: "procs negative", yaml: "max_procs: -1\n", err: `:1: max_procs: must be 0 (all CPUs) or between 1 and 1024, got "-1"`},
		{name: "unknown key", yaml: "memory_limits: 1MiB\n", err: `:1: memory_limits`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, ok := loadAgentYAML(t, tt.yaml, tt.err)
			if !ok {
				return
			}
			if cfg.MemoryLimit != tt.limit || cfg.GCPercent != tt.gc {
				t.Errorf("got memory_limit %d gc_percent %d, want %d and %d", cfg.MemoryLimit, cfg.GCPercent, tt.limit, tt.gc)
			}
			wantProcs := tt.procs
			if !strings.Contains(tt.yaml, "max_procs") {
				wantProcs = runner.DefaultMaxProcs
			}
			if cfg.MaxProcs != wantProcs {
				t.Errorf("got max_procs %d, want %d", cfg.MaxProcs, wantProcs)
			}
		})
	}
}

func TestAgentTimerSlack(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       time.Duration
		err        string
	}{
		{name: "default", yaml: "name: a\n", want: runner.DefaultTimerSlack},
		{name: "as started", yaml: "timer_slack: 0\n", want: 0},
		{name: "set", yaml: "timer_slack: 5ms\n", want: 5 * time.Millisecond},
		{name: "too large", yaml: "timer_slack: 200ms\n", err: `:1: timer_slack: must be between 0 (as started) and 100ms, got "200ms"`},
		{name: "negative", yaml: "timer_slack: -1ms\n", err: `:1: timer_slack: must be a duration like 500ms, 10s or 5m, got "-1ms"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if cfg, ok := loadAgentYAML(t, tt.yaml, tt.err); ok && cfg.TimerSlack != tt.want {
				t.Errorf("got timer_slack %v, want %v", cfg.TimerSlack, tt.want)
			}
		})
	}
}

// loadAgentYAML loads text as an agent file. With wantErr set, the load must
// fail with an error starting with the file's path and wantErr, and ok is
// false; otherwise it must succeed.
func loadAgentYAML(t *testing.T, text, wantErr string) (cfg runner.AgentConfig, ok bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := runner.LoadAgentConfig(path)
	if wantErr != "" {
		if err == nil || !strings.HasPrefix(err.Error(), path+wantErr) {
			t.Fatalf("got %v, want an error starting %q", err, path+wantErr)
		}
		return cfg, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg, true
}
