package gpio_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sinks/console"
	"github.com/pspf/pspf-edge/sources/gpio"
)

func registry() *runner.Registry {
	reg := runner.NewRegistry()
	reg.Sources["gpio"] = gpio.Factory()
	reg.Sinks["console"] = console.Factory()
	return reg
}

func TestReadmeSampleParses(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(data)
	if m == nil {
		t.Fatal("README.md has no yaml sample")
	}
	spec, err := registry().ParsePipeline("readme.yaml", append(m[1], "sinks:\n  - console: {}\n"...), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatalf("README sample: %v", err)
	}
	c := spec.Sources[0].Config.(*gpio.Config)
	if len(c.Pins) != 3 || c.Pins[1].Alias != "flow_meter" || c.Pins[2].Edge != "both" {
		t.Errorf("got %+v, want the sample's pins with defaults filled", c.Pins)
	}
}

func TestConfigErrors(t *testing.T) {
	text := `sources:
  - gpio:
      pins:
        - {name: GPIO1, chip: gpiochip0, line: 1}
        - {name: GPIO2, mode: toggle}
        - {name: GPIO3, debounce: 5s}
        - {name: GPIO3}
sinks: [{console: {}}]
`
	_, err := registry().ParsePipeline("bad.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	want := `bad.yaml:4: sources[0].gpio.pins[0]: needs either name, or chip and line
bad.yaml:5: sources[0].gpio.pins[1].mode: must be edge, level or counter, got "toggle"
bad.yaml:6: sources[0].gpio.pins[2].debounce: must be at most 1s, got "5s"
bad.yaml:7: sources[0].gpio.pins[3]: pin "GPIO3" is listed twice; give one an alias`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}
