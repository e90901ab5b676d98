package agenttest

import (
	"os"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// READMESamples returns the ```yaml blocks of a README, in order. It fails
// the test if there is none: every connector README carries a sample.
func READMESamples(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []string
	rest := string(data)
	for {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		if j < 0 {
			t.Fatalf("%s: unterminated yaml block", path)
		}
		out = append(out, rest[:j])
		rest = rest[j+3:]
	}
	if len(out) == 0 {
		t.Fatalf("%s: no ```yaml sample", path)
	}
	return out
}

// CheckREADMESamples parses every yaml sample of a README as a whole pipeline
// file with reg and fails the test on any error.
func CheckREADMESamples(t testing.TB, path string, reg *agent.Registry) []*agent.PipelineSpec {
	t.Helper()
	var specs []*agent.PipelineSpec
	for i, s := range READMESamples(t, path) {
		spec, err := reg.ParsePipeline("sample.yaml", []byte(s), agent.Defaults{Buffer: agent.DefaultBufferConfig()})
		if err != nil {
			t.Errorf("%s sample %d: %v", path, i+1, err)
			continue
		}
		specs = append(specs, spec)
	}
	return specs
}
