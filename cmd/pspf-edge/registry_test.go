package main

import (
	"cmp"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBuildTags builds the agent by default, with each build tag that
// leaves connectors out, and with all of them, as for a board that needs
// few: the binary builds, links none of the left-out packages (and paho in
// no build: the one MQTT stack is internal/mqttc), and its pipeline schema
// has exactly the source and sink types that remain. A pipeline that names
// a left-out type is refused with the types there are; an agent file whose
// fleet section names a left-out channel (no_mqtt: mqtt, no_kafka: kafka)
// is refused naming the tag, by validate and at start-up.
func TestBuildTags(t *testing.T) {
	allSources := []string{"gpio", "kafka", "mqtt", "serial", "simulate"}
	allSinks := []string{"console", "file", "http", "kafka", "mqtt", "postgres"}
	allChannels := []string{"https", "kafka", "mqtt"}
	channelTag := map[string]string{"kafka": "no_kafka", "mqtt": "no_mqtt"}
	never := []string{"eclipse/paho"} // in no build's non-test code
	for _, tc := range []struct {
		tags         string
		gonePkgs     []string // packages the binary must not link
		goneSources  []string
		goneSinks    []string
		goneChannels []string // fleet channels left out
		validate     string   // a pipeline the binary must refuse
		validateWant string
	}{
		{tags: ""},
		{tags: "no_kafka_source", gonePkgs: []string{"pspf-edge/sources/kafka"}, goneSources: []string{"kafka"},
			validate: "kafka-commands.yaml", validateWant: `sources[0].kafka: unknown source type "kafka"; expected one of: gpio, mqtt, serial, simulate`},
		{tags: "no_kafka", gonePkgs: []string{"pspf-edge/sources/kafka", "pspf-edge/sinks/kafka", "franz-go/"}, goneSources: []string{"kafka"}, goneSinks: []string{"kafka"},
			goneChannels: []string{"kafka"},
			validate:     "mqtt-to-kafka.yaml", validateWant: `unknown sink type "kafka"`},
		{tags: "no_mqtt", gonePkgs: []string{"pspf-edge/sources/mqtt", "pspf-edge/sinks/mqtt", "pspf-edge/internal/mqttc"}, goneSources: []string{"mqtt"}, goneSinks: []string{"mqtt"},
			goneChannels: []string{"mqtt"},
			validate:     "mqtt-to-kafka.yaml", validateWant: `unknown source type "mqtt"`},
		{tags: "no_http", gonePkgs: []string{"pspf-edge/sinks/http"}, goneSinks: []string{"http"}},
		{tags: "no_postgres", gonePkgs: []string{"pspf-edge/sinks/postgres", "jackc/pgx"}, goneSinks: []string{"postgres"},
			validate: "mqtt-to-postgres.yaml", validateWant: `unknown sink type "postgres"`},
		// make build's: Go's bundled HTTP/2 (and its hpack) left out too.
		{tags: "no_postgres,nethttpomithttp2", gonePkgs: []string{"pspf-edge/sinks/postgres", "jackc/pgx", "golang.org/x/net/http2"}, goneSinks: []string{"postgres"},
			validate: "mqtt-to-postgres.yaml", validateWant: `unknown sink type "postgres"`},
		{tags: "no_serial", gonePkgs: []string{"pspf-edge/sources/serial", "go.bug.st/serial"}, goneSources: []string{"serial"},
			validate: "serial-sensor.yaml", validateWant: `unknown source type "serial"`},
		{tags: "no_gpio", gonePkgs: []string{"pspf-edge/sources/gpio", "periph.io/"}, goneSources: []string{"gpio"},
			validate: "gpio-counter.yaml", validateWant: `unknown source type "gpio"`},
		{tags: "no_kafka,no_mqtt,no_http,no_postgres,no_serial,no_gpio",
			gonePkgs:    []string{"franz-go", "pgx", "periph.io/", "go.bug.st/serial", "pspf-edge/sinks/http", "pspf-edge/sources/mqtt", "pspf-edge/sinks/mqtt", "pspf-edge/internal/mqttc"},
			goneSources: []string{"gpio", "kafka", "mqtt", "serial"}, goneSinks: []string{"http", "kafka", "mqtt", "postgres"},
			goneChannels: []string{"kafka", "mqtt"}},
	} {
		t.Run(cmp.Or(tc.tags, "default"), func(t *testing.T) {
			deps, err := exec.Command("go", "list", "-tags", tc.tags, "-deps", ".").CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, deps)
			}
			for _, line := range strings.Split(string(deps), "\n") {
				for _, p := range append(tc.gonePkgs, never...) {
					if strings.Contains(line, p) {
						t.Errorf("the binary built with %s links %s", tc.tags, line)
					}
				}
			}
			bin := filepath.Join(t.TempDir(), "pspf-edge")
			build := exec.Command("go", "build", "-tags", tc.tags, "-o", bin, ".")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			out, err := exec.Command(bin, "schema").Output()
			if err != nil {
				t.Fatalf("schema: %v", err)
			}
			sources, sinks := schemaTypes(t, out, "sources"), schemaTypes(t, out, "sinks")
			if want := without(allSources, tc.goneSources); !slices.Equal(sources, want) {
				t.Errorf("source types: got %v, want %v", sources, want)
			}
			if want := without(allSinks, tc.goneSinks); !slices.Equal(sinks, want) {
				t.Errorf("sink types: got %v, want %v", sinks, want)
			}
			checkChannels(t, bin, allChannels, tc.goneChannels, channelTag)
			if tc.validate == "" {
				return
			}
			out, err = exec.Command(bin, "validate", "../../pipelines/"+tc.validate).CombinedOutput()
			if code := exitCode(err); code != exitProblem || !strings.Contains(string(out), tc.validateWant) {
				t.Errorf("validate %s: exit %d, output %s; want %d and %q", tc.validate, code, out, exitProblem, tc.validateWant)
			}
		})
	}
}

// checkChannels checks the fleet channels of the binary bin: an agent file
// with a channel of gone is refused naming its build tag, by validate -c
// and by run (at start-up, before anything runs); one with any other
// channel validates.
func checkChannels(t *testing.T, bin string, all, gone []string, tag map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for _, ch := range all {
		f := filepath.Join(dir, ch+".yaml")
		agentFile := "name: gw\ndata_dir: " + filepath.Join(dir, "data-"+ch) + "\npipelines_dir: " + filepath.Join(dir, "pipelines") +
			"\nfleet:\n  channel: " + ch + "\n  public_keys: [k.pub]\n  https: {url: \"https://h/{target}\"}\n" +
			"  mqtt: {broker: tcp://127.0.0.1:1}\n  kafka: {brokers: [127.0.0.1:1]}\n"
		if err := os.WriteFile(f, []byte(agentFile), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "validate", "-c", f).CombinedOutput()
		code := exitCode(err)
		if !slices.Contains(gone, ch) {
			if code != exitOK {
				t.Errorf("validate -c, channel %s: exit %d, output %s; want %d", ch, code, out, exitOK)
			}
			continue
		}
		want := "channel " + ch + " is not in this binary: it was built with -tags " + tag[ch]
		if code != exitProblem || !strings.Contains(string(out), want) {
			t.Errorf("validate -c, channel %s: exit %d, output %s; want %d and %q", ch, code, out, exitProblem, want)
		}
		out, err = exec.Command(bin, "run", "-c", f).CombinedOutput()
		if code := exitCode(err); code != exitProblem || !strings.Contains(string(out), want) {
			t.Errorf("run -c, channel %s: exit %d, output %s; want %d and %q", ch, code, out, exitProblem, want)
		}
	}
}

// schemaTypes returns the component types the pipeline schema allows in
// list (sources or sinks), sorted.
func schemaTypes(t *testing.T, schema []byte, list string) []string {
	t.Helper()
	var s struct {
		Properties map[string]struct {
			Items struct {
				OneOf []struct {
					Required []string `json:"required"` // the type's key
				} `json:"oneOf"`
			} `json:"items"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(schema, &s); err != nil {
		t.Fatalf("schema: %v", err)
	}
	var types []string
	for _, o := range s.Properties[list].Items.OneOf {
		types = append(types, o.Required...)
	}
	slices.Sort(types)
	return types
}

func without(all, gone []string) []string {
	var out []string
	for _, s := range all {
		if !slices.Contains(gone, s) {
			out = append(out, s)
		}
	}
	return out
}

// exitCode returns a command's exit status: 0 for a nil error, -1 when it
// did not run.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestMakeBuildLeavesPostgresOut checks the decision of the Makefile (and
// scripts/cross-build.sh): `make build` leaves the PostgreSQL sink out,
// `make build-full` has every connector.
func TestMakeBuildLeavesPostgresOut(t *testing.T) {
	for target, want := range map[string][]string{
		"build":      {"console", "file", "http", "kafka", "mqtt"},
		"build-full": {"console", "file", "http", "kafka", "mqtt", "postgres"},
	} {
		bin := filepath.Join(t.TempDir(), "pspf-edge")
		if out, err := exec.Command("make", "-s", "-C", "../..", target, "BIN="+bin).CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		out, err := exec.Command(bin, "schema").Output()
		if err != nil {
			t.Fatalf("schema: %v", err)
		}
		if got := schemaTypes(t, out, "sinks"); !slices.Equal(got, want) {
			t.Errorf("make %s: sink types %v, want %v", target, got, want)
		}
	}
}
