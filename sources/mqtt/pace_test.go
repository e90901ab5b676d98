package mqtt

import (
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/sinks/console"
)

// parseSource parses a pipeline whose mqtt source has the extra keys
// given (YAML lines, indented as the source's keys) and returns the
// source's config, or the parse error.
func parseSource(t *testing.T, extra string) (*Config, error) {
	t.Helper()
	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["console"] = console.Factory()
	text := "sources:\n  - mqtt:\n      brokers: [\"tcp://127.0.0.1:1883\"]\n      subscriptions: [{topic: \"s/#\", qos: 1}]\n" +
		extra + "sinks: [{console: {}}]\n"
	spec, err := reg.ParsePipeline("pace.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		return nil, err
	}
	return spec.Sources[0].Config.(*Config), nil
}

// TestReadPaceConfig checks what the client is asked for by each way of
// setting the pace: by default MQTT 5 if the broker takes it (auto) with
// reads paced between the 5 ms linger and 1 s to gather about batch_size
// messages; a linger set alone paces them at exactly that, as before the
// pace adapted; linger with max_read_pace adapts between the two;
// max_read_pace 0 (or at most linger) is linger; 3.1.1 is not paced.
func TestReadPaceConfig(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		version     byte
		pace, min   time.Duration
		batch       int
	}{
		{"defaults", "", mqttc.ProtocolAuto, time.Second, 5 * time.Millisecond, 500},
		{"batch_size", "      batch_size: 100\n", mqttc.ProtocolAuto, time.Second, 5 * time.Millisecond, 100},
		{"linger alone", "      linger: 5ms\n", mqttc.ProtocolAuto, 5 * time.Millisecond, 0, 0},
		{"linger 0 alone", "      linger: 0s\n", mqttc.ProtocolAuto, 0, 0, 0},
		{"linger and max_read_pace", "      linger: 20ms\n      max_read_pace: 500ms\n", mqttc.ProtocolAuto, 500 * time.Millisecond, 20 * time.Millisecond, 500},
		{"max_read_pace alone", "      max_read_pace: 250ms\n", mqttc.ProtocolAuto, 250 * time.Millisecond, 5 * time.Millisecond, 500},
		{"max_read_pace 0", "      max_read_pace: 0s\n", mqttc.ProtocolAuto, 5 * time.Millisecond, 0, 0},
		{"max_read_pace below linger", "      linger: 100ms\n      max_read_pace: 50ms\n", mqttc.ProtocolAuto, 100 * time.Millisecond, 0, 0},
		{"v5", "      protocol_version: \"5\"\n", 5, time.Second, 5 * time.Millisecond, 500},
		{"3.1.1", "      protocol_version: \"3.1.1\"\n", 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseSource(t, tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			o := clientOptions(cfg, "id", nil)
			if o.ProtocolVersion != tc.version || o.ReadPace != tc.pace || o.ReadPaceMin != tc.min || o.ReadPaceBatch != tc.batch {
				t.Errorf("got version %d, pace %v, min %v, batch %d; want %d, %v, %v, %d",
					o.ProtocolVersion, o.ReadPace, o.ReadPaceMin, o.ReadPaceBatch, tc.version, tc.pace, tc.min, tc.batch)
			}
		})
	}
}

// TestReadPaceConfigErrors checks the bounds of max_read_pace: at most 1s,
// like linger (a longer pause would only delay the acks, which wait for
// the group commit's fsync, once a second by default), never negative.
func TestReadPaceConfigErrors(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"      max_read_pace: 2s\n", "pace.yaml:5: sources[0].mqtt.max_read_pace: must be at most 1s"},
		{"      max_read_pace: -1s\n", "pace.yaml:5: sources[0].mqtt.max_read_pace:"},
	} {
		_, err := parseSource(t, tc.extra)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error starting %q", tc.extra, err, tc.want)
		}
	}
}
