package agent_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pspf/pspf-edge/"

// shared are the libraries the connectors may import: packages among the
// connectors' folders that are not connectors, internal/kafkaconn (franz-go's log
// lines for the Kafka source and sink) and internal/mqttc, the MQTT
// client of both the MQTT source and sink (and of agent/fleet's MQTT
// channel).
var shared = []string{"operators/expr", "operators/internal/timeunit", "internal/mqttc", "internal/kafkaconn"}

// allowed says which packages of the module pkg may depend on (directly or
// not, in its non-test code), by the package map of docs/architecture.md;
// ok is false for a package the map does not cover.
func allowed(pkg string) (deps []string, ok bool) {
	// The storage and what builds on it share internal/flock (the file
	// locks of data directories, logs and state files) and
	// internal/atomicfile (small files replaced durably).
	storage := []string{"buffer", "state", "checkpoint", "internal/flock", "internal/atomicfile"}
	switch {
	case pkg == "agent":
		return nil, true // the SDK: nothing of the module
	case pkg == "agent/runner":
		return append([]string{"agent"}, storage...), true
	case pkg == "agent/supervisor":
		return append([]string{"agent", "agent/runner"}, storage...), true
	case pkg == "agent/fleet":
		// The fleet client builds on the runtime and speaks MQTT through
		// internal/mqttc, never through a connector: the build tags that
		// leave a connector out (no_mqtt, no_kafka) leave its channel out by
		// tagged files of agent/fleet, which a connector import would defeat.
		return append([]string{"agent", "agent/runner", "agent/supervisor", "internal/mqttc"}, storage...), true
	case pkg == "agent/agenttest":
		return append([]string{"agent", "agent/runner", "internal/testkit", "internal/wait"}, storage...), true
	case pkg == "internal/flock", pkg == "internal/atomicfile", pkg == "internal/wait":
		return nil, true
	case pkg == "internal/mqttc":
		return []string{"agent"}, true
	case pkg == "internal/mqttc/mqtttest":
		// The scripted MQTT broker of tests: the client's packet codec and
		// the polling helper. No package above may import it (tests only).
		return []string{"agent", "internal/mqttc", "internal/wait"}, true
	case pkg == "internal/kafkaconn":
		return nil, true
	case pkg == "internal/testkit":
		return []string{"internal/wait"}, true
	case slices.Contains(storage, pkg):
		return storage, true
	case plugin(pkg):
		return append([]string{"agent"}, shared...), true
	}
	return nil, false
}

// plugin reports whether pkg is in a connectors' folder; its own
// subpackages are part of it.
func plugin(pkg string) bool {
	return strings.HasPrefix(pkg, "sources/") || strings.HasPrefix(pkg, "operators/") || strings.HasPrefix(pkg, "sinks/")
}

// TestPackageMap holds the module to its package map: plugins (sources/,
// operators/, sinks/) build on the SDK (package agent) alone, never on the
// runtime (agent/runner, agent/supervisor), its test kit or each other; the
// SDK depends on nothing of the module; the storage packages on nothing
// above them. `go list -deps` of every package says what it depends on.
func TestPackageMap(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the packages: %v", err)
	}
	out, err := exec.Command(gocmd, "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok {
			continue
		}
		may, ok := allowed(pkg)
		if !ok {
			continue
		}
		checked++
		for _, dep := range fields[1:] {
			dep, ok := strings.CutPrefix(dep, module)
			if !ok || slices.Contains(may, dep) || plugin(pkg) && strings.HasPrefix(dep, pkg+"/") {
				continue
			}
			t.Errorf("%s depends on %s; it may depend on %v of the module only (docs/architecture.md)", pkg, dep, may)
		}
	}
	t.Logf("%d packages checked", checked)
	if checked < 20 {
		t.Errorf("checked %d packages, want every plugin, the SDK, the runtime and the storage", checked)
	}
}
