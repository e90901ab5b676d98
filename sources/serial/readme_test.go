package serial_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/sinks/console"
	"github.com/pspf/pspf-edge/sources/serial"
)

func registry() *runner.Registry {
	reg := runner.NewRegistry()
	reg.Sources["serial"] = serial.Factory()
	reg.Operators["decode"] = decode.Factory()
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
	c := spec.Sources[0].Config.(*serial.Config)
	if c.Poll.Command != "READ\r\n" || c.Delimiter != "\n" || c.MaxFrame != 1024 {
		t.Errorf("got %+v, want the sample's values", c)
	}
}

func TestConfigErrors(t *testing.T) {
	text := `sources:
  - serial:
      baud: 10
      data_bits: 9
      parity: sometimes
      framing: fixed
      frame_size: 4096
sinks: [{console: {}}]
`
	_, err := registry().ParsePipeline("bad.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	// On one line, the keys written come in their order, then the
	// required ones left out.
	want := `bad.yaml:3: sources[0].serial.baud: must be between 50 and 4000000, got "10"
bad.yaml:3: sources[0].serial.device: must not be empty
bad.yaml:4: sources[0].serial.data_bits: must be 5, 6, 7 or 8, got "9"
bad.yaml:5: sources[0].serial.parity: must be none, odd, even, mark or space, got "sometimes"
bad.yaml:7: sources[0].serial.frame_size: must be between 1 and max_frame (1024), got "4096"`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}
