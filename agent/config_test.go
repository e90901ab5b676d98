package agent_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/sinks/console"
	"github.com/pspf/pspf-edge/sinks/file"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func testRegistry() *agent.Registry {
	r := agent.NewRegistry()
	r.Sources["simulate"] = simulate.Factory()
	r.Sinks["console"] = console.Factory()
	r.Sinks["file"] = file.Factory()
	return r
}

func parse(t *testing.T, text string) (*agent.PipelineSpec, error) {
	t.Helper()
	return testRegistry().ParsePipeline("pipelines/x.yaml", []byte(text), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
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
buffer: {max_bytes: 2MiB, overflow: drop_oldest}
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

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]agent.ByteSize{"0": 0, "512": 512, "4KiB": 4096, "1.5MiB": 3 << 19, "10MB": 10e6, "1GiB": 1 << 30, "2 KB": 2000} {
		got, err := agent.ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1 parsec", "1e30GiB"} {
		if _, err := agent.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q): got nil error", in)
		}
	}
}

func TestSchemaMentionsEveryComponent(t *testing.T) {
	b, err := json.Marshal(testRegistry().Schema())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"simulate"`, `"console"`, `"file"`, `"overflow"`, `"drop_oldest"`} {
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
	f.Add([]byte("sources: [{simulate: ${X}}]"))
	f.Add([]byte("{{{"))
	reg := testRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := reg.ParsePipeline("f.yaml", data, agent.Defaults{Buffer: agent.DefaultBufferConfig()})
		if err == nil && (spec == nil || len(spec.Sources) == 0 || len(spec.Sinks) == 0) {
			t.Fatalf("no error but spec %+v", spec)
		}
	})
}
