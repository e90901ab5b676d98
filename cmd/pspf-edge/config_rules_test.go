package main

import (
	"testing"

	"github.com/pspf/pspf-edge/agent/runner"
)

// TestConnectorRangeErrors holds the sources' and sinks' range and required
// rules, which their config tags state (min, max, required), to the
// messages the connectors gave when they wrote them by hand: each case is
// one entry with one rule broken, reported at its file, line and path.
func TestConnectorRangeErrors(t *testing.T) {
	const (
		mqttSrc = "mqtt: {brokers: ['tcp://h:1'], subscriptions: [{topic: a}], "
		kafka   = "kafka: {brokers: ['h:9092'], topic: t, "
		mqttOut = "mqtt: {broker: 'tcp://h:1', topic: t, "
		serial  = "serial: {device: /dev/x, "
	)
	for _, tc := range []struct{ source, sink, want string }{
		{mqttSrc + "keepalive: 500ms}", "", `sources[0].mqtt.keepalive: must be at least 1s, got "500ms"`},
		{mqttSrc + "connect_timeout: 0s}", "", `sources[0].mqtt.connect_timeout: must be positive, got "0s"`},
		{mqttSrc + "max_reconnect_interval: 10ms}", "", `sources[0].mqtt.max_reconnect_interval: must be at least 1s, got "10ms"`},
		{mqttSrc + "max_in_flight: 65536}", "", `sources[0].mqtt.max_in_flight: must be between 1 and 65535, got "65536"`},
		{mqttSrc + "max_in_flight_bytes: 32KiB}", "", `sources[0].mqtt.max_in_flight_bytes: must be between 64KiB and 1GiB, got "32KiB"`},
		{mqttSrc + "batch_size: 0}", "", `sources[0].mqtt.batch_size: must be between 1 and 65536, got "0"`},
		{mqttSrc + "linger: 2s}", "", `sources[0].mqtt.linger: must be at most 1s, got "2s"`},
		{mqttSrc + "max_payload: 512MiB}", "", `sources[0].mqtt.max_payload: must be between 1B and 256MiB, got "512MiB"`},
		{"gpio: {pins: [{chip: c, line: -1}]}", "", `sources[0].gpio.pins[0].line: must not be negative, got "-1"`},
		{"gpio: {pins: [{name: a, debounce: 2s}]}", "", `sources[0].gpio.pins[0].debounce: must be at most 1s, got "2s"`},
		{"gpio: {pins: [{name: a}], queue: 0}", "", `sources[0].gpio.queue: must be between 1 and 1048576, got "0"`},
		{"gpio: {pins: [{name: a}], max_unacked: 1025}", "", `sources[0].gpio.max_unacked: must be between 1 and 1024, got "1025"`},
		{"simulate: {sensors: 0}", "", `sources[0].simulate.sensors: must be between 1 and 1000000, got "0"`},
		{"simulate: {rate: 0}", "", `sources[0].simulate.rate: must be positive, got "0"`},
		{"simulate: {count: -1}", "", `sources[0].simulate.count: must not be negative, got "-1"`},
		{"simulate: {period: 0s}", "", `sources[0].simulate.period: must be positive, got "0s"`},
		{"simulate: {field: ''}", "", `sources[0].simulate.field: must not be empty`},
		{"simulate: {max_unacked: 0}", "", `sources[0].simulate.max_unacked: must be at least 1, got "0"`},
		{"serial: {baud: 9600}", "", `sources[0].serial.device: must not be empty`},
		{serial + "max_frame: 2MiB}", "", `sources[0].serial.max_frame: must be between 1B and 1MiB, got "2MiB"`},
		{serial + "linger: 1500ms}", "", `sources[0].serial.linger: must be at most 1s, got "1500ms"`},
		{"", "file: {max_files: 1}", `sinks[0].file.path: must not be empty`},
		{"", "file: {path: /x, max_bytes: 512B}", `sinks[0].file.max_bytes: must be at least 1KiB, got "512B"`},
		{"", "file: {path: /x, max_files: 1001}", `sinks[0].file.max_files: must be between 0 and 1000, got "1001"`},
		{"", "http: {url: 'http://h/', timeout: 0s}", `sinks[0].http.timeout: must be positive, got "0s"`},
		{"", "mqtt: {broker: 'tcp://h:1'}", `sinks[0].mqtt.topic: must not be empty`},
		{"", mqttOut + "keep_alive: 0s}", `sinks[0].mqtt.keep_alive: must be positive, got "0s"`},
		{"", mqttOut + "write_timeout: 0s}", `sinks[0].mqtt.write_timeout: must be positive, got "0s"`},
		{"", "kafka: {brokers: ['h:9092']}", `sinks[0].kafka.topic: must not be empty`},
		{"", kafka + "batch_bytes: 512B}", `sinks[0].kafka.batch_bytes: must be between 1KiB and 64MiB, got "512B"`},
		{"", kafka + "linger: 2m}", `sinks[0].kafka.linger: must be between 0 and 1m, got "2m"`},
		{"", kafka + "dial_timeout: 0s}", `sinks[0].kafka.dial_timeout: must be positive, got "0s"`},
		{"", kafka + "unreachable_after: 0s}", `sinks[0].kafka.unreachable_after: must be positive, got "0s"`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			src, sink := tc.source, tc.sink
			if src == "" {
				src = "simulate: {}"
			}
			if sink == "" {
				sink = "console: {}"
			}
			text := "sources:\n  - " + src + "\nsinks:\n  - " + sink + "\n"
			line := "2"
			if tc.source == "" {
				line = "4"
			}
			_, err := newRegistry().ParsePipeline("p.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
			if err == nil || err.Error() != "p.yaml:"+line+": "+tc.want {
				t.Errorf("got %v, want the one error p.yaml:%s: %s", err, line, tc.want)
			}
		})
	}
}
