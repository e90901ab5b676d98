package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

const fleetPipe = "sources:\n  - simulate: {sensors: 1, rate: 1}\nsinks:\n  - console: {}\n"

// keygen and sign make a bundle an agent holding the public key accepts.
func TestFleetKeygenSign(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "k")
	if code, out, errs := run(t, "fleet", "keygen", "-o", prefix); code != exitOK || !strings.Contains(out, "key ") {
		t.Fatalf("keygen: got %d, %q, %q", code, out, errs)
	}
	if st, err := os.Stat(prefix + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("private key: got %v, %v; want mode 0600", st, err)
	}
	if code, _, errs := run(t, "fleet", "keygen", "-o", prefix); code != exitProblem || !strings.Contains(errs, "exists") {
		t.Errorf("keygen over an existing key: got %d, %q; want exit 1, not overwritten", code, errs)
	}
	pipes := filepath.Join(dir, "pipes")
	os.Mkdir(pipes, 0o750)
	os.WriteFile(filepath.Join(pipes, "a.yaml"), []byte(fleetPipe), 0o640)
	os.WriteFile(filepath.Join(pipes, "README.md"), []byte("not a pipeline"), 0o640)
	out := filepath.Join(dir, "b.bundle")
	if code, stdout, errs := run(t, "fleet", "sign", pipes, "--key", prefix+".key", "-o", out, "--version", "42"); code != exitOK {
		t.Fatalf("sign: got %d, %q, %q", code, stdout, errs)
	}
	keys, err := fleet.LoadKeyring([]string{prefix + ".pub"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(out)
	b, err := fleet.Decode(raw, keys)
	if err != nil || b.Version != 42 || len(b.Files) != 1 || b.Files[0].Name != "a.yaml" {
		t.Fatalf("decoded: got %+v, %v; want version 42 with a.yaml", b, err)
	}
	// The private key never appears in the bundle or the output.
	key, _ := os.ReadFile(prefix + ".key")
	if strings.Contains(string(raw), strings.Split(string(key), "\n")[1]) {
		t.Error("the bundle holds the private key")
	}
	// An invalid file is not signed.
	os.WriteFile(filepath.Join(pipes, "bad.yaml"), []byte("sources: []\n"), 0o640)
	if code, _, errs := run(t, "fleet", "sign", pipes, "--key", prefix+".key", "-o", filepath.Join(dir, "c.bundle")); code != exitProblem || !strings.Contains(errs, "bad.yaml") {
		t.Errorf("sign with an invalid file: got %d, %q; want exit 1 naming bad.yaml", code, errs)
	}
	if code, _, _ := run(t, "fleet", "sign", pipes); code != exitUsage {
		t.Errorf("sign without --key: got %d, want %d", code, exitUsage)
	}
}

// The admin API shows the fleet's status at /api/v1/fleet, secrets
// masked; 404 without a fleet section.
func TestAdminFleetStatus(t *testing.T) {
	sup := supervisor.New(supervisor.Deps{Config: runner.DefaultAgentConfig(), Registry: newRegistry(), Metrics: runner.NewMetrics()})
	get := func(h http.Handler) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/api/v1/fleet", nil))
		return rec
	}
	if rec := get(adminHandler(sup, runner.NewMetrics(), slog.New(slog.DiscardHandler), nil)); rec.Code != http.StatusNotFound {
		t.Errorf("without a fleet: got %d, want 404", rec.Code)
	}
	dir := t.TempDir()
	ap := fleet.NewApplier(fleet.ApplierConfig{PipelinesDir: dir, StateDir: filepath.Join(dir, "state")})
	if err := ap.Open(); err != nil {
		t.Fatal(err)
	}
	ap.Apply([]byte("not a bundle"))
	secrets := new(agent.Secrets)
	secrets.Add("bundle")
	rec := get(adminHandler(sup, runner.NewMetrics(), slog.New(slog.DiscardHandler), fleetStatusFunc(ap, secrets)))
	var st fleet.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); rec.Code != http.StatusOK || err != nil || st.LastRefused == nil || st.LastRefused.Reason != "malformed" {
		t.Fatalf("got %d %s (%v), want the refusal", rec.Code, rec.Body, err)
	}
	if strings.Contains(st.LastRefused.Error, "bundle") {
		t.Errorf("a secret shows: %q", st.LastRefused.Error)
	}
}

// validate -c checks the fleet section and the heartbeat's sink.
func TestValidateFleetSection(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ fleet, want string }{
		{"  channel: mqtt\n  public_keys: [k.pub]\n  mqtt: {broker: tcp://127.0.0.1:1883}\n", ""},
		{"  channel: mqtt\n  mqtt: {broker: tcp://127.0.0.1:1883}\n", "public_keys"},
		{"  channel: carrier-pigeon\n  public_keys: [k.pub]\n", "channel"},
		{"  channel: mqtt\n  public_keys: [k.pub]\n  mqtt: {broker: tcp://127.0.0.1:1883}\n  heartbeat: {sink: {mqtt: {broker: tcp://127.0.0.1:1883, topic: hb}}}\n", "encoding must be raw"},
		{"  channel: mqtt\n  public_keys: [k.pub]\n  mqtt: {broker: tcp://127.0.0.1:1883}\n  heartbeat: {sink: {smoke: {}}}\n", "unknown sink type"},
		{"  channel: mqtt\n  public_keys: [k.pub]\n  mqtt: {broker: tcp://127.0.0.1:1883}\n  heartbeat: {sink: {mqtt: {broker: tcp://127.0.0.1:1883, topic: hb, encoding: raw}}}\n", ""},
	}
	for i, c := range cases {
		f := filepath.Join(dir, "agent"+strings.Repeat("x", i)+".yaml")
		os.WriteFile(f, []byte("data_dir: "+dir+"\nfleet:\n"+c.fleet), 0o640)
		code, _, errs := run(t, "validate", "-c", f)
		if c.want == "" && code != exitOK || c.want != "" && (code != exitProblem || !strings.Contains(errs, c.want)) {
			t.Errorf("fleet:\n%s: got %d %q, want %q", c.fleet, code, errs, c.want)
		}
	}
}

// latestBeats keeps each agent's latest heartbeat, in agent name order.
func TestLatestBeats(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	beat := func(agent string, seq uint64, at time.Duration) fleet.Heartbeat {
		return fleet.Heartbeat{Agent: agent, Seq: seq, SentAt: t0.Add(at)}
	}
	got := latestBeats([]fleet.Heartbeat{
		beat("gw-c", 1, 0), beat("gw-a", 7, 2*time.Second), beat("gw-b", 3, 0),
		beat("gw-a", 9, 3*time.Second), beat("gw-c", 2, time.Second), beat("gw-a", 8, time.Second),
	})
	var names []string
	for _, b := range got {
		names = append(names, fmt.Sprintf("%s/%d", b.Agent, b.Seq))
	}
	if want := "gw-a/9 gw-b/3 gw-c/2"; strings.Join(names, " ") != want {
		t.Errorf("got %v, want %s", names, want)
	}
}
