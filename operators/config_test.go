package operators_test

import (
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/operators/deadband"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/operators/dedup"
	"github.com/pspf/pspf-edge/operators/throttle"
	"github.com/pspf/pspf-edge/operators/window"
)

// TestRangeErrors holds the operators' range and required rules, which their
// config tags state (min, max, required), to the messages they gave when each
// operator wrote them by hand.
func TestRangeErrors(t *testing.T) {
	factories := map[string]agent.Factory[agent.Operator]{
		"throttle": throttle.Factory(), "deadband": deadband.Factory(), "dedup": dedup.Factory(),
		"window": window.Factory(), "decode": decode.Factory(),
	}
	const win = "type: tumbling, size: 1s, aggregates: [{fn: count}]"
	for _, tc := range []struct{ typ, body, want string }{
		{"throttle", "{rate: 0}", `operators[0].throttle.rate: must be positive, got "0"`},
		{"throttle", "{rate: -1.5}", `operators[0].throttle.rate: must be positive, got "-1.5"`},
		{"throttle", "{rate: NaN}", `operators[0].throttle.rate: must be positive, got "NaN"`},
		{"throttle", "{rate: inf}", `operators[0].throttle.rate: must be finite, got "inf"`},
		{"throttle", "{per: 0s}", `operators[0].throttle.per: must be positive, got "0s"`},
		{"throttle", "{burst: 0}", `operators[0].throttle.burst: must be at least 1, got "0"`},
		{"deadband", "{threshold: 1}", `operators[0].deadband.field: must not be empty`},
		{"deadband", "{field: t, threshold: -0.5}", `operators[0].deadband.threshold: must not be negative, got "-0.5"`},
		{"deadband", "{field: t, threshold: NaN}", `operators[0].deadband.threshold: must not be negative, got "NaN"`},
		{"dedup", "{ttl: 0s}", `operators[0].dedup.ttl: must be positive, got "0s"`},
		{"window", "{" + win + ", memory_bytes: 32KiB}", `operators[0].window.memory_bytes: must be at least 64KiB, got "32KiB"`},
		{"window", "{type: tumbling, size: 1s, aggregates: [{field: v}]}", `operators[0].window.aggregates[0].fn: must not be empty`},
		{"decode", "{max_bytes: 0}", `operators[0].decode.max_bytes: must be between 1B and 64MiB, got "0"`},
		{"decode", "{max_fields: 65537}", `operators[0].decode.max_fields: must be between 1 and 65536, got "65537"`},
		{"decode", "{max_depth: 0}", `operators[0].decode.max_depth: must be between 1 and 64, got "0"`},
	} {
		t.Run(tc.typ+" "+tc.body, func(t *testing.T) {
			_, err := agenttest.ParseOperators("operators:\n  - "+tc.typ+": "+tc.body+"\n", tc.typ, factories[tc.typ])
			if err == nil || !strings.Contains(err.Error(), "test.yaml:2: "+tc.want) {
				t.Errorf("got %v, want test.yaml:2: %s", err, tc.want)
			}
		})
	}
}
