package kafka

import (
	"slices"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/sinks/console"
)

func testRegistry() *runner.Registry {
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Sinks["console"] = console.Factory()
	return reg
}

func TestREADMESample(t *testing.T) {
	t.Setenv("KAFKA_PASSWORD", "secret")
	specs := agenttest.CheckREADMESamples(t, "README.md", testRegistry())
	if len(specs) != 1 {
		t.Fatalf("got %d samples, want 1", len(specs))
	}
	c := specs[0].Sources[0].Config.(*Config)
	if c.SASL.Password != "secret" || c.Group != "gw-0042-commands" || len(c.Topics) != 1 || c.TLS.CAFile == "" || c.Start != "earliest" {
		t.Errorf("got %+v, want the sample's values", c)
	}
	if !slices.Contains(agent.SecretValues(c), "secret") {
		t.Error("the SASL password is not among the config's secrets: the runner would not mask it")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"{topics: [t]}", "brokers: must list at least one broker"},
		{"{brokers: [a], topics: [t]}", `brokers[0]: must be host:port, got "a"`},
		{"{brokers: [a:1]}", "topics: must list at least one topic (or give partitions)"},
		{"{brokers: [a:1], topics: [t], partitions: {t: [0]}}", "partitions: must not be set with topics"},
		{"{brokers: [a:1], topics: ['bad topic']}", `topics[0]: must hold only letters, digits, '.', '_' and '-', got "bad topic"`},
		{"{brokers: [a:1], partitions: {t: [0, 0]}}", "partitions.t[1]: must be a partition number (0 or more), each once, got 0"},
		{"{brokers: [a:1], partitions: {t: []}}", "partitions.t: must list at least one partition"},
		{"{brokers: [a:1], partitions: {t: [0]}, static_membership: true}", "static_membership: only applies to group members"},
		{"{brokers: [a:1], topics: [t], start: middle}", `start: must be earliest or latest, got "middle"`},
		{"{brokers: [a:1], topics: [t], commit_interval: 1ms}", `commit_interval: must be between 10ms and 1h, got "1ms"`},
		{"{brokers: [a:1], topics: [t], max_in_flight_bytes: 1KiB}", `max_in_flight_bytes: must be between 64KiB and 1GiB, got "1KiB"`},
		{"{brokers: [a:1], topics: [t], max_payload: 32MiB}", `max_payload: must be between 1KiB and 16MiB, got "32MiB"`},
		{"{brokers: [a:1], topics: [t], fetch_max_bytes: 1MiB, fetch_max_partition_bytes: 2MiB}", "fetch_max_partition_bytes: must be between 1KiB and fetch_max_bytes (1048576 bytes)"},
		{"{brokers: [a:1], topics: [t], max_concurrent_fetches: 0}", `max_concurrent_fetches: must be between 1 and 64, got "0"`},
		{"{brokers: [a:1], topics: [t], heartbeat_interval: 20s}", "heartbeat_interval: must be at most a third of session_timeout (45s)"},
		{"{brokers: [a:1], topics: [t], fetch_max_wait: 2s}", "unreachable_after: must be at least twice fetch_max_wait (2s)"},
		{"{brokers: [a:1], topics: [t], tls: {cert_file: x}}", "cert_file and key_file go together"},
		{"{brokers: [a:1], topics: [t], sasl: {mechanism: plain}}", "sasl.username: must not be empty with a SASL mechanism"},
		{"{brokers: [a:1], topics: [t], sasl: {mechanism: gssapi, username: u}}", `sasl.mechanism: must be`},
		{"{brokers: [a:1], topics: [t], isolation: dirty}", `isolation: must be read_committed or read_uncommitted, got "dirty"`},
	} {
		_, err := testRegistry().ParsePipeline("p.yaml", []byte("sources: [{kafka: "+tc.body+"}]\nsinks: [{console: {}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.body, err, tc.want)
		}
	}
	_, err := testRegistry().ParsePipeline("p.yaml", []byte("sources: [{kafka: {brokers: [a:1], topics: [t]}}]\nsinks: [{console: {}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Errorf("the smallest config: %v", err)
	}
}
