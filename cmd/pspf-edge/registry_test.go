package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildWithoutKafkaSource builds the agent with -tags no_kafka_source,
// as for a board that reads no Kafka: the source's package is not linked
// in, and a pipeline that names it is refused with the types there are.
func TestBuildWithoutKafkaSource(t *testing.T) {
	deps, err := exec.Command("go", "list", "-tags", "no_kafka_source", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, deps)
	}
	if strings.Contains(string(deps), "pspf-edge/sources/kafka\n") {
		t.Error("the binary built with no_kafka_source still links sources/kafka")
	}
	bin := filepath.Join(t.TempDir(), "pspf-edge")
	build := exec.Command("go", "build", "-tags", "no_kafka_source", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "validate", "../../pipelines/kafka-commands.yaml").CombinedOutput()
	if code := exitCode(err); code != exitProblem || !strings.Contains(string(out), `sources[0].kafka: unknown source type "kafka"; expected one of: gpio, mqtt, serial, simulate`) {
		t.Errorf("validate kafka-commands.yaml: exit %d, output %s; want %d and the unknown type", code, out, exitProblem)
	}
	if out, err := exec.Command(bin, "validate", "../../pipelines/mqtt-to-kafka.yaml").CombinedOutput(); err != nil {
		t.Errorf("validate mqtt-to-kafka.yaml (the Kafka sink stays): %v\n%s", err, out)
	}
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
