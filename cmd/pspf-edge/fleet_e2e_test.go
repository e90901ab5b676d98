package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/twmb/franz-go/pkg/kfake"
)

// fleetAgent is one pspf-edge process of a fleet test, in a directory of
// its own (its file sinks write there).
type fleetAgent struct {
	t    *testing.T
	bin  string
	dir  string
	name string
	logs *agenttest.LogBuffer
	cmd  *exec.Cmd
	done chan error
}

func newFleetAgent(t *testing.T, bin, name, fleetYAML string, labels string) *fleetAgent {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "pipelines"), 0o750)
	cfg := fmt.Sprintf("name: %s\ndata_dir: %s\npipelines_dir: %s\nadmin: {address: \"\"}\nreload_debounce: 50ms\nremoved_drain_timeout: 1s\nlabels: {%s}\nfleet:\n%s",
		name, filepath.Join(dir, "data"), filepath.Join(dir, "pipelines"), labels, fleetYAML)
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	a := &fleetAgent{t: t, bin: bin, dir: dir, name: name, logs: new(agenttest.LogBuffer)}
	t.Cleanup(a.stop)
	return a
}

func (a *fleetAgent) start() {
	a.t.Helper()
	a.cmd = exec.Command(a.bin, "run", "-c", filepath.Join(a.dir, "agent.yaml"))
	a.cmd.Dir = a.dir
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func() { a.done <- a.cmd.Wait() }()
}

func (a *fleetAgent) stop() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		a.t.Errorf("%s: no clean stop within 30s", a.name)
	}
	a.cmd = nil
}

// runs reports whether the agent runs bundle version v: its file sink
// has written out/vV.ndjson.
func (a *fleetAgent) runs(v int) bool {
	st, err := os.Stat(filepath.Join(a.dir, "out", fmt.Sprintf("v%d.ndjson", v)))
	return err == nil && st.Size() > 0
}

// fleetPipeline is a pipeline that shows which bundle runs: its file sink
// writes out/vV.ndjson in the agent's directory.
func fleetPipeline(v int) string {
	return fmt.Sprintf("sources:\n  - simulate: {sensors: 1, rate: 20}\nsinks:\n  - file: {path: out/v%d.ndjson}\n", v)
}

// signDir signs files (name -> content) as bundle version v.
func signDir(t *testing.T, key string, v int, files map[string]string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	for n, c := range files {
		os.WriteFile(filepath.Join(dir, n), []byte(c), 0o640)
	}
	out := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.bundle", v))
	args := append([]string{"fleet", "sign", dir, "--key", key, "-o", out, "--version", fmt.Sprint(v)}, extra...)
	if code, _, errs := run(t, args...); code != exitOK {
		t.Fatalf("sign v%d: %d %s", v, code, errs)
	}
	return out
}

func waitAll(t *testing.T, agents []*fleetAgent, what string, cond func(*fleetAgent) bool) {
	t.Helper()
	for _, a := range agents {
		agenttest.Eventually(t, 60*time.Second, a.name+": "+what, func() bool { return cond(a) }, a.logs)
	}
}

// TestFleetMQTT: 20 agent processes against one mosquitto (fleetSuite).
func TestFleetMQTT(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	fleetSuite(t, fmt.Sprintf("  channel: mqtt\n  mqtt: {broker: %q}\n", m.URL())+
		fmt.Sprintf("  heartbeat:\n    interval: 2s\n    sink: {mqtt: {broker: %q, topic: \"pspf/fleet/heartbeats/{_key}\", retain: true, encoding: raw, username: gw, password: %s}}\n", m.URL(), hbPassword))
}

// TestFleetKafka: 20 agent processes against one kfake cluster, the
// bundles on a compacted topic (fleetSuite).
func TestFleetKafka(t *testing.T) {
	k := testbroker.StartKafka(t, kfake.AllowAutoTopicCreation())
	fleetSuite(t, fmt.Sprintf("  channel: kafka\n  kafka: {brokers: [%q]}\n", k.Addr())+
		fmt.Sprintf("  heartbeat:\n    interval: 2s\n    sink: {kafka: {brokers: [%q], topic: pspf-fleet-heartbeats, encoding: raw, auto_create_topics: true}}\n", k.Addr()))
}

// hbPassword is the MQTT heartbeat sink's password: it must show nowhere.
const hbPassword = "hb-pw-4711"

// fleetSuite: 20 agents with the channel given. A push reaches
// all of them and each runs the new bundle; an agent stopped during a push
// applies it when it starts; a bad signature, an older version and a
// bundle with an invalid file are refused by every agent with the reason
// in its log, and the bundle running stays; a bundle whose pipeline
// cannot connect is rolled back to the one before it; fleet status shows
// every agent with its bundle version and the rollback.
func fleetSuite(t *testing.T, channel string) {
	const n = 20
	bin := buildBinary(t, t.TempDir(), "amd64", "")
	keys := t.TempDir()
	if code, _, errs := run(t, "fleet", "keygen", "-o", filepath.Join(keys, "fleet")); code != exitOK {
		t.Fatal(errs)
	}
	fleetYAML := channel + fmt.Sprintf("  public_keys: [%s]\n  grace_period: 3s\n", filepath.Join(keys, "fleet.pub"))
	pushCfg := filepath.Join(t.TempDir(), "push.yaml")
	os.WriteFile(pushCfg, []byte("fleet:\n"+fleetYAML), 0o640)
	key := filepath.Join(keys, "fleet.key")
	pushTo := func(bundle, target string) {
		t.Helper()
		if code, out, errs := run(t, "fleet", "push", bundle, "--to", target, "-c", pushCfg); code != exitOK {
			t.Fatalf("push: %d %s %s", code, out, errs)
		}
	}

	agents := make([]*fleetAgent, n)
	for i := range agents {
		agents[i] = newFleetAgent(t, bin, fmt.Sprintf("gw-%02d", i), fleetYAML, fmt.Sprintf("site: plant-%d", i%2))
		agents[i].start()
	}
	waitAll(t, agents, "following the channel", func(a *fleetAgent) bool {
		return strings.Contains(a.logs.String(), "following the config channel")
	})

	v1 := signDir(t, key, 1, map[string]string{"a.yaml": fleetPipeline(1)})
	t0 := time.Now()
	pushTo(v1, "all")
	waitAll(t, agents, "running version 1", func(a *fleetAgent) bool { return a.runs(1) })
	t.Logf("push to all %d agents running version 1: %v", n, time.Since(t0).Round(time.Millisecond))

	// One agent is off during the next push; it applies it when it starts.
	agents[0].stop()
	v2 := signDir(t, key, 2, map[string]string{"a.yaml": fleetPipeline(2)})
	t0 = time.Now()
	pushTo(v2, "all")
	waitAll(t, agents[1:], "running version 2", func(a *fleetAgent) bool { return a.runs(2) })
	t.Logf("push to all %d running agents running version 2: %v", n-1, time.Since(t0).Round(time.Millisecond))
	agents[0].start()
	waitAll(t, agents[:1], "running version 2 after its start", func(a *fleetAgent) bool { return a.runs(2) })

	// A label reaches only the agents that have it.
	pushTo(signDir(t, key, 3, map[string]string{"a.yaml": fleetPipeline(3)}), "site/plant-1")
	waitAll(t, agents, "running version 3 if at plant-1", func(a *fleetAgent) bool {
		return a.runs(3) == ((a.name[len(a.name)-1]-'0')%2 == 1)
	})
	for i, a := range agents {
		if i%2 == 0 && a.runs(3) {
			t.Errorf("%s (plant-0) runs version 3, pushed to plant-1", a.name)
		}
	}

	// Refused, each with its reason.
	good, _ := os.ReadFile(signDir(t, key, 10, map[string]string{"a.yaml": fleetPipeline(10)}))
	var env map[string]any
	json.Unmarshal(good, &env)
	sig := []byte(env["signature"].(string))
	// Another base64 character (flipping a bit of it made z, Z, + or /
	// illegal, and the bundle malformed instead of badly signed: 4 runs
	// in 64).
	if sig[3] == 'A' {
		sig[3] = 'B'
	} else {
		sig[3] = 'A'
	}
	env["signature"] = string(sig)
	tampered, _ := json.Marshal(env)
	badSig := filepath.Join(t.TempDir(), "bad.bundle")
	os.WriteFile(badSig, tampered, 0o640)
	for _, c := range []struct{ bundle, reason string }{
		{badSig, "bad_signature"},
		{signDir(t, key, 2, map[string]string{"a.yaml": fleetPipeline(4)}), "replay"},
		{signDir(t, key, 11, map[string]string{"a.yaml": "sources: []\n"}, "--no-validate"), "invalid"},
	} {
		pushTo(c.bundle, "all")
		waitAll(t, agents, "refusing with "+c.reason, func(a *fleetAgent) bool {
			return strings.Contains(a.logs.String(), "bundle refused") && strings.Contains(a.logs.String(), "reason="+c.reason)
		})
	}
	// A bundle whose pipeline cannot connect (no broker on that port) is
	// rolled back when the grace period ends.
	unreachable := fmt.Sprintf("sources:\n  - simulate: {sensors: 1, rate: 1}\nsinks:\n  - mqtt: {broker: \"tcp://127.0.0.1:%d\", topic: t}\n", testbroker.FreePort(t))
	pushTo(signDir(t, key, 12, map[string]string{"a.yaml": fleetPipeline(12), "up.yaml": unreachable}), "all")
	waitAll(t, agents, "rolling version 12 back", func(a *fleetAgent) bool {
		return strings.Contains(a.logs.String(), "bundle rolled back")
	})
	for i, a := range agents {
		want := fleetPipeline(2)
		if i%2 == 1 {
			want = fleetPipeline(3)
		}
		if got, _ := os.ReadFile(filepath.Join(a.dir, "pipelines", "a.yaml")); !bytes.Equal(got, []byte(want)) {
			t.Errorf("%s: a.yaml after the refusals and the rollback: got %q, want %q", a.name, got, want)
		}
		if _, err := os.Stat(filepath.Join(a.dir, "pipelines", "up.yaml")); err == nil {
			t.Errorf("%s: up.yaml still there after the rollback", a.name)
		}
	}
	// fleet status: every agent, with its bundle and the rollback.
	var beats []struct {
		Agent      string `json:"agent"`
		Bundle     uint64 `json:"bundle_version"`
		RolledBack uint64 `json:"rolled_back_from"`
		Pipelines  []struct{ Name, State string }
	}
	agenttest.Eventually(t, 30*time.Second, "fleet status showing every agent after the rollback", func() bool {
		code, out, errs := run(t, "fleet", "status", "-c", pushCfg, "--json", "--wait", "1s")
		if code != exitOK {
			t.Logf("fleet status: %d %s", code, errs)
			return false
		}
		if strings.Contains(out+errs, hbPassword) {
			t.Errorf("fleet status shows the password:\n%s", out)
		}
		beats = beats[:0]
		if err := json.Unmarshal([]byte(out), &beats); err != nil || len(beats) != n {
			return false
		}
		for i, b := range beats {
			want := uint64(2 + i%2)
			// a runs; up, removed by the rollback, shows as stopped.
			if b.Agent != agents[i].name || b.Bundle != want || b.RolledBack != 12 || len(b.Pipelines) != 2 ||
				b.Pipelines[0] != (struct{ Name, State string }{"a", "running"}) || b.Pipelines[1] != (struct{ Name, State string }{"up", "stopped"}) {
				return false
			}
		}
		return true
	}, stringer(func() string { return fmt.Sprintf("%+v", beats) }))
	code, table, _ := run(t, "fleet", "status", "-c", pushCfg, "--wait", "1s")
	if code != exitOK || strings.Count(table, "rolled back from 12") != n || !strings.Contains(table, "gw-19") {
		t.Errorf("fleet status table: got %d:\n%s", code, table)
	}
	t.Logf("fleet status:\n%s", table)
	priv, _ := os.ReadFile(key)
	line := strings.Split(string(priv), "\n")[1]
	for _, a := range agents {
		if strings.Contains(a.logs.String(), line) || strings.Contains(a.logs.String(), hbPassword) {
			t.Errorf("%s: the private key or the password is in the log", a.name)
		}
	}
}

type stringer func() string

func (s stringer) String() string { return s() }
