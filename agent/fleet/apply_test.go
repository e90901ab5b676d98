package fleet

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
	"github.com/pspf/pspf-edge/internal/testkit"
	"github.com/pspf/pspf-edge/sinks/console"
	"github.com/pspf/pspf-edge/sources/simulate"
)

func testRegistry() *runner.Registry {
	r := runner.NewRegistry()
	r.Sources["simulate"] = simulate.Factory()
	r.Sinks["console"] = console.Factory()
	return r
}

// pipe is a valid pipeline file; tag tells versions apart.
func pipe(tag string) []byte {
	return []byte("description: " + tag + "\nsources:\n  - simulate: {sensors: 1, rate: 1}\nsinks:\n  - console: {}\n")
}

type applierEnv struct {
	a       *Applier
	dir     string
	state   string
	log     *testkit.LogBuffer
	metrics *runner.Metrics
}

func newApplier(t *testing.T, keys Keyring, onConflict string) *applierEnv {
	t.Helper()
	e := &applierEnv{dir: t.TempDir(), state: filepath.Join(t.TempDir(), "fleet"), log: new(testkit.LogBuffer), metrics: runner.NewMetrics()}
	reg := testRegistry()
	e.a = NewApplier(ApplierConfig{PipelinesDir: e.dir, StateDir: e.state, Keys: keys, OnConflict: onConflict,
		Logger: e.log.Logger(slog.LevelDebug), Metrics: e.metrics,
		Validate: func(file string, data []byte) error {
			_, err := reg.ParsePipeline(file, data, runner.DefaultAgentConfig().Defaults)
			return err
		}})
	if err := e.a.Open(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *applierEnv) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (e *applierEnv) metric(name string) string {
	var b strings.Builder
	e.metrics.WritePrometheus(&b)
	for l := range strings.SplitSeq(b.String(), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return strings.TrimPrefix(l, name+" ")
		}
	}
	return ""
}

func TestApply(t *testing.T) {
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	if ok, err := e.a.Apply(sign(t, sk, 1, File{"a.yaml", pipe("a1")}, File{"b.yaml", pipe("b1")})); !ok || err != nil {
		t.Fatalf("first bundle: got %v, %v; want applied", ok, err)
	}
	if got := e.read(t, "a.yaml"); got != string(pipe("a1")) {
		t.Errorf("a.yaml: got %q", got)
	}
	// The next one changes a, removes b, adds c.
	v2 := sign(t, sk, 2, File{"a.yaml", pipe("a2")}, File{"c.yml", pipe("c2")})
	if ok, err := e.a.Apply(v2); !ok || err != nil {
		t.Fatalf("second bundle: got %v, %v; want applied", ok, err)
	}
	if a, b, c := e.read(t, "a.yaml"), e.read(t, "b.yaml"), e.read(t, "c.yml"); a != string(pipe("a2")) || b != "<none>" || c != string(pipe("c2")) {
		t.Errorf("after version 2: a %q, b %q, c %q", a, b, c)
	}
	st := e.a.Status()
	if st.Version != 2 || st.PreviousVersion != 1 {
		t.Errorf("status: got %+v, want version 2, previous 1", st)
	}
	// The previous bundle is kept as it came.
	if prev, err := os.ReadFile(filepath.Join(e.state, previousFile)); err != nil {
		t.Fatal(err)
	} else if b, err := Decode(prev, keys); err != nil || b.Version != 1 {
		t.Errorf("previous.bundle: got %v, %v; want version 1", b, err)
	}
	// The same bundle again (a retained message on reconnect): nothing.
	if ok, err := e.a.Apply(v2); ok || err != nil {
		t.Errorf("the running bundle again: got %v, %v; want not applied, no error", ok, err)
	}
	if got := e.metric("pspf_fleet_bundles_applied_total"); got != "2" {
		t.Errorf("applied metric: got %q, want 2", got)
	}
	if got := e.metric("pspf_fleet_bundle_version"); got != "2" {
		t.Errorf("version gauge: got %q, want 2", got)
	}
	// The state survives a restart.
	a2 := NewApplier(ApplierConfig{PipelinesDir: e.dir, StateDir: e.state, Keys: keys})
	if err := a2.Open(); err != nil || a2.Version() != 2 {
		t.Errorf("reopened: got version %d, %v; want 2", a2.Version(), err)
	}
}

// Refused bundles change no file; each is counted and warned about once.
func TestApplyRefuses(t *testing.T) {
	sk, keys := testKey(t)
	other, _ := testKey(t)
	e := newApplier(t, keys, "")
	if _, err := e.a.Apply(sign(t, sk, 5, File{"a.yaml", pipe("a5")})); err != nil {
		t.Fatal(err)
	}
	tampered := sign(t, sk, 6, File{"a.yaml", pipe("a6")})
	tampered[len(tampered)-10] ^= 0x01 // inside the base64 payload
	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"older", sign(t, sk, 4, File{"a.yaml", pipe("a4")}), ErrReplay},
		{"same version, other content", sign(t, sk, 5, File{"a.yaml", pipe("a5'")}), ErrReplay},
		{"unknown key", sign(t, other, 6, File{"a.yaml", pipe("a6")}), ErrUnknownKey},
		{"bad signature", tampered, ErrBadSignature},
		{"unsigned", []byte(`{"format":"pspf-edge-bundle/1","payload":"e30="}`), ErrUnsigned},
		{"invalid file", sign(t, sk, 6, File{"a.yaml", pipe("a6")}, File{"bad.yaml", []byte("sources: []\nsinks:\n  - console: {bogus: 1}\n")}), ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for range 3 { // redelivered: warned once
				ok, err := e.a.Apply(c.raw)
				if ok || !errors.Is(err, c.want) {
					t.Fatalf("got %v, %v; want refused: %v", ok, err, c.want)
				}
			}
			if got := e.read(t, "a.yaml"); got != string(pipe("a5")) {
				t.Errorf("a.yaml: got %q, want version 5's", got)
			}
			if got := e.read(t, "bad.yaml"); got != "<none>" {
				t.Errorf("bad.yaml written: %q", got)
			}
			if got := e.metric(`pspf_fleet_bundles_refused_total{reason="` + c.want.Error() + `"}`); got == "" || got == "0" {
				t.Errorf("refused metric for %v: got %q", c.want, got)
			}
			if r := e.a.Status().LastRefused; r == nil || r.Reason != c.want.Error() {
				t.Errorf("status last_refused: got %+v, want reason %v", r, c.want)
			}
		})
	}
	warns := strings.Count(e.log.String(), `msg="fleet: bundle refused`)
	if warns != len(cases) {
		t.Errorf("got %d WARN lines for %d refused bundles sent 3 times each, want one per bundle:\n%s", warns, len(cases), e.log)
	}
	if !strings.Contains(e.log.String(), "bogus") {
		t.Errorf("the invalid file's error is not in the log:\n%s", e.log)
	}
}

// A file edited on the gateway is not overwritten unless on_conflict says
// the bundle wins.
func TestApplyConflict(t *testing.T) {
	sk, keys := testKey(t)
	for _, policy := range []string{ConflictLocal, ConflictBundle} {
		t.Run(policy, func(t *testing.T) {
			e := newApplier(t, keys, policy)
			if _, err := e.a.Apply(sign(t, sk, 1, File{"a.yaml", pipe("a1")}, File{"b.yaml", pipe("b1")})); err != nil {
				t.Fatal(err)
			}
			local := string(pipe("edited on the gateway"))
			if err := os.WriteFile(filepath.Join(e.dir, "a.yaml"), []byte(local), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(e.dir, "c.yml"), pipe("local c"), 0o640); err != nil {
				t.Fatal(err)
			}
			ok, err := e.a.Apply(sign(t, sk, 2, File{"a.yaml", pipe("a2")}, File{"c.yaml", pipe("c2")}))
			if policy == ConflictLocal {
				if ok || !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "a.yaml (edited locally)") || !strings.Contains(err.Error(), "c.yml (a local file of the same pipeline)") {
					t.Fatalf("got %v, %v; want a conflict naming a.yaml and c.yml", ok, err)
				}
				if got := e.read(t, "a.yaml"); got != local {
					t.Errorf("a.yaml: got %q, want the local edit", got)
				}
				if got := e.read(t, "b.yaml"); got != string(pipe("b1")) {
					t.Errorf("b.yaml: got %q, want version 1's", got)
				}
				return
			}
			if !ok || err != nil {
				t.Fatalf("got %v, %v; want applied", ok, err)
			}
			if got := e.read(t, "a.yaml"); got != string(pipe("a2")) {
				t.Errorf("a.yaml: got %q, want version 2's", got)
			}
			if !strings.Contains(e.log.String(), "a.yaml (edited locally)") {
				t.Errorf("the overwrite is not logged:\n%s", e.log)
			}
		})
	}
}

// A bundle whose writing was cut short (pending.bundle left behind) is
// finished by Open.
func TestApplyPendingFinished(t *testing.T) {
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	if _, err := e.a.Apply(sign(t, sk, 1, File{"a.yaml", pipe("a1")})); err != nil {
		t.Fatal(err)
	}
	// As if the agent stopped after saving version 2 as pending and
	// writing half of its files.
	v2 := sign(t, sk, 2, File{"a.yaml", pipe("a2")}, File{"b.yaml", pipe("b2")})
	if err := os.WriteFile(filepath.Join(e.state, pendingFile), v2, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "a.yaml"), pipe("a2"), 0o640); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(ApplierConfig{PipelinesDir: e.dir, StateDir: e.state, Keys: keys})
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	if a.Version() != 2 || e.read(t, "b.yaml") != string(pipe("b2")) {
		t.Errorf("got version %d, b.yaml %q; want 2 and version 2's", a.Version(), e.read(t, "b.yaml"))
	}
	if st := a.Status(); st.PreviousVersion != 1 {
		t.Errorf("previous version: got %d, want 1", st.PreviousVersion)
	}
	if _, err := os.Stat(filepath.Join(e.state, pendingFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending.bundle left: %v", err)
	}
}

// A bundle written by the applier is run by the supervisor's hot reload.
func TestApplyHotReload(t *testing.T) {
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	cfg := runner.DefaultAgentConfig()
	cfg.DataDir, cfg.PipelinesDir, cfg.ReloadDebounce = t.TempDir(), e.dir, 20*time.Millisecond
	sup := supervisor.New(supervisor.Deps{Config: cfg, Registry: testRegistry(), Metrics: runner.NewMetrics(), Logger: e.log.Logger(slog.LevelInfo), Poll: 50 * time.Millisecond})
	e.a.c.Validate = sup.ValidatePipeline
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sup.Run(ctx, nil) })
	defer func() { cancel(); wg.Wait() }()
	running := func(name, desc string) func() bool {
		return func() bool {
			for _, v := range sup.Views() {
				if v.Name == name && v.State == supervisor.StateRunning && v.Hash == hashOf(pipe(desc)) {
					return true
				}
			}
			return false
		}
	}
	if _, err := e.a.Apply(sign(t, sk, 1, File{"a.yaml", pipe("a1")})); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "version 1 running", running("a", "a1"), e.log)
	if _, err := e.a.Apply(sign(t, sk, 2, File{"a.yaml", pipe("a2")})); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "version 2 running", running("a", "a2"), e.log)
	if _, err := e.a.Apply(sign(t, sk, 3, File{"a.yaml", []byte("sources: []\n")})); !errors.Is(err, ErrInvalid) {
		t.Errorf("an invalid file: got %v, want ErrInvalid", err)
	}
}

// Refused bundles that come again in turn (the retained bundles of two
// targets on every reconnect) are warned about once each.
func TestApplyRefusedInTurnWarnOnce(t *testing.T) {
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	if _, err := e.a.Apply(sign(t, sk, 5, File{"a.yaml", pipe("a5")})); err != nil {
		t.Fatal(err)
	}
	old := sign(t, sk, 3, File{"a.yaml", pipe("a3")})
	bad := sign(t, sk, 6, File{"a.yaml", []byte("sources: []\n")})
	for range 4 {
		e.a.Apply(old)
		e.a.Apply(bad)
	}
	if n := strings.Count(e.log.String(), `msg="fleet: bundle refused`); n != 2 {
		t.Errorf("got %d WARN lines, want 2:\n%s", n, e.log)
	}
	if got := e.metric(`pspf_fleet_bundles_refused_total{reason="replay"}`); got != "4" {
		t.Errorf("replay refusals counted: got %q, want 4", got)
	}
}
