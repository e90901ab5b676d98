package mqtt

import (
	"os"
	"regexp"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sinks/console"
)

// readmeSample returns the first ```yaml block of README.md.
func readmeSample(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(data)
	if m == nil {
		t.Fatal("README.md has no yaml sample")
	}
	return string(m[1])
}

func TestReadmeSampleParses(t *testing.T) {
	pass := t.TempDir() + "/mqtt.pass"
	if err := os.WriteFile(pass, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sample := regexp.MustCompile(`/etc/pspf-edge/mqtt.pass`).ReplaceAllString(readmeSample(t), pass)
	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["console"] = console.Factory()
	reg.ReadFile = agenttest.SampleReadFile(t) // the TLS files exist on a gateway
	spec, err := reg.ParsePipeline("readme.yaml", []byte(sample+"sinks:\n  - console: {}\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("README sample: %v", err)
	}
	c := spec.Sources[0].Config.(*Config)
	if c.Password != "secret" || len(c.Subscriptions) != 3 || c.Key != "{device}" {
		t.Errorf("got %+v, want the sample's values", c)
	}
}

func TestConfigErrors(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["console"] = console.Factory()
	text := `sources:
  - mqtt:
      brokers: ["http://x"]
      clean_session: true
      subscriptions: [{topic: "a/#/b", qos: 3}, {topic: "ok", qos: 1}]
      topic_template: "a/{x}"
      key: "{y}"
      max_in_flight: 0
sinks: [{console: {}}]
`
	_, err := reg.ParsePipeline("bad.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	want := []string{
		`bad.yaml:3: sources[0].mqtt.brokers[0]: must be a URL like tcp://host:1883 or ssl://host:8883, got "http://x"`,
		`bad.yaml:4: sources[0].mqtt.clean_session: must be false when a subscription has QoS 1 or 2`,
		`bad.yaml:5: sources[0].mqtt.subscriptions[0].topic: # must be a whole level and the last one, got "a/#/b"`,
		`bad.yaml:5: sources[0].mqtt.subscriptions[0].qos: must be 0, 1 or 2, got "3"`,
		`bad.yaml:7: sources[0].mqtt.key: {y} is not a field of topic_template, got "{y}"`,
		`bad.yaml:8: sources[0].mqtt.max_in_flight: must be between 1 and 65535, got "0"`,
	}
	errs, ok := err.(agent.ConfigErrors)
	if !ok {
		t.Fatalf("got %v, want ConfigErrors", err)
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors:\n%v\nwant %d", len(errs), err, len(want))
	}
	for i, e := range errs {
		if got := e.Error(); len(got) < len(want[i]) || got[:len(want[i])] != want[i] {
			t.Errorf("error %d: got %q, want prefix %q", i, got, want[i])
		}
	}
}
