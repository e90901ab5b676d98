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
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/testkit"
	mqttsink "github.com/pspf/pspf-edge/sinks/mqtt"
)

// chanChannel is a channel fed by the test.
type chanChannel chan []byte

func (c chanChannel) Run(ctx context.Context, _ []string, got func(string, []byte)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case raw := <-c:
			got("all", raw)
		}
	}
}

// unreachable is a pipeline whose sink cannot connect: its broker's port
// has no listener.
func unreachable(t *testing.T) []byte {
	port := testbroker.FreePort(t)
	return []byte("sources:\n  - simulate: {sensors: 1, rate: 1}\nsinks:\n  - mqtt: {broker: \"tcp://127.0.0.1:" + itoa(port) + "\", topic: t}\n")
}

func itoa(n int) string {
	var b []byte
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

type fleetRig struct {
	*applierEnv
	sup *supervisor.Supervisor
	ch  chanChannel
}

// newFleetRig runs a supervisor on the applier's directory and a fleet
// agent with grace as its grace period.
func newFleetRig(t *testing.T, keys Keyring, grace time.Duration) *fleetRig {
	e := newApplier(t, keys, "")
	reg := testRegistry()
	reg.Sinks["mqtt"] = mqttsink.Factory()
	cfg := runner.DefaultAgentConfig()
	cfg.DataDir, cfg.PipelinesDir, cfg.ReloadDebounce = t.TempDir(), e.dir, 20*time.Millisecond
	cfg.RemovedDrainTimeout, cfg.ShutdownTimeout = 200*time.Millisecond, 2*time.Second
	sup := supervisor.New(supervisor.Deps{Config: cfg, Registry: reg, Metrics: e.metrics, Logger: e.log.Logger(slog.LevelInfo), Poll: 50 * time.Millisecond})
	e.a.c.Validate = sup.ValidatePipeline
	r := &fleetRig{applierEnv: e, sup: sup, ch: make(chanChannel)}
	ag := NewAgent(AgentConfig{Applier: e.a, Channel: r.ch, Health: sup.Health, GracePeriod: grace, CheckEvery: 20 * time.Millisecond, Logger: e.log.Logger(slog.LevelInfo)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sup.Run(ctx, nil) })
	wg.Go(func() { ag.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// A bundle whose pipeline cannot connect within the grace period is rolled
// back: the previous bundle runs again, and the failure is reported; the
// failed version is not applied again when it comes again.
func TestRollback(t *testing.T) {
	sk, keys := testKey(t)
	r := newFleetRig(t, keys, 2*time.Second)
	r.ch <- sign(t, sk, 1, File{"a.yaml", pipe("a1")})
	testkit.Eventually(t, 20*time.Second, "version 1 healthy", func() bool {
		v, _ := r.a.Trial()
		return r.a.Version() == 1 && v == 0
	}, r.log)
	v2 := sign(t, sk, 2, File{"a.yaml", pipe("a2")}, File{"up.yaml", unreachable(t)})
	r.ch <- v2
	testkit.Eventually(t, 20*time.Second, "version 2 rolled back", func() bool { return r.a.Status().RolledBack == 2 }, r.log)
	st := r.a.Status()
	if st.Version != 1 || !strings.Contains(st.RolledBackReason, "pipeline up not up within the grace period") {
		t.Errorf("status: got %+v, want version 1 and the reason naming pipeline up", st)
	}
	if got := r.read(t, "a.yaml"); got != string(pipe("a1")) {
		t.Errorf("a.yaml: got %q, want version 1's", got)
	}
	if got := r.read(t, "up.yaml"); got != "<none>" {
		t.Errorf("up.yaml left behind: %q", got)
	}
	if got := r.metric("pspf_fleet_rollbacks_total"); got != "1" {
		t.Errorf("rollbacks metric: got %q, want 1", got)
	}
	if !strings.Contains(r.log.String(), "bundle rolled back") {
		t.Errorf("the rollback is not logged:\n%s", r.log)
	}
	// Version 1 runs again, and is up.
	testkit.Eventually(t, 20*time.Second, "version 1 running again", func() bool {
		ok, _ := r.sup.Health("a", hashOf(pipe("a1")))
		return ok
	}, r.log)
	// The failed bundle again (a retained message): refused.
	r.ch <- v2
	testkit.Eventually(t, 10*time.Second, "version 2 refused", func() bool {
		lr := r.a.Status().LastRefused
		return lr != nil && lr.Reason == ErrReplay.Error()
	}, r.log)
	// A fixed bundle goes through.
	r.ch <- sign(t, sk, 3, File{"a.yaml", pipe("a3")})
	testkit.Eventually(t, 20*time.Second, "version 3 healthy", func() bool {
		v, _ := r.a.Trial()
		return r.a.Version() == 3 && v == 0
	}, r.log)
	if st := r.a.Status(); st.RolledBack != 0 || st.PreviousVersion != 1 {
		t.Errorf("after version 3: got %+v, want no rollback shown, previous 1", st)
	}
}

// A rollback does not overwrite a file edited on the gateway since the
// failed bundle wrote it (on_conflict: local): it is reported instead.
func TestRollbackConflict(t *testing.T) {
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	for v, tag := range []string{"a1", "a2"} {
		if _, err := e.a.Apply(sign(t, sk, uint64(v+1), File{"a.yaml", pipe(tag)})); err != nil {
			t.Fatal(err)
		}
	}
	local := string(pipe("edited"))
	os.WriteFile(filepath.Join(e.dir, "a.yaml"), []byte(local), 0o640)
	err := e.a.Rollback(2, "test")
	if err == nil || !strings.Contains(err.Error(), "a.yaml (edited locally)") {
		t.Fatalf("got %v, want a conflict naming a.yaml", err)
	}
	if got := e.read(t, "a.yaml"); got != local {
		t.Errorf("a.yaml: got %q, want the local edit", got)
	}
	if st := e.a.Status(); !strings.Contains(st.RolledBackReason, "not rolled back") || st.OnTrial {
		t.Errorf("status: got %+v, want the failure reported, no longer on trial", st)
	}
	// The first bundle has nothing to go back to: reported too.
	e2 := newApplier(t, keys, "")
	e2.a.Apply(sign(t, sk, 1, File{"a.yaml", pipe("a1")}))
	if err := e2.a.Rollback(1, "test"); err == nil || !strings.Contains(err.Error(), "no previous bundle") {
		t.Errorf("rollback of the first bundle: got %v", err)
	}
}

// A rollback cut short by a crash is finished by Open as a rollback: the
// restored bundle is not on trial and the failed one is not its previous.
func TestRollbackPendingFinished(t *testing.T) {
	sk, keys := testKey(t)
	e := newApplier(t, keys, "")
	v1 := sign(t, sk, 1, File{"a.yaml", pipe("a1")})
	for _, raw := range [][]byte{v1, sign(t, sk, 2, File{"a.yaml", pipe("a2")})} {
		if _, err := e.a.Apply(raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.state, pendingFile), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(ApplierConfig{PipelinesDir: e.dir, StateDir: e.state, Keys: keys})
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if st.Version != 1 || st.RolledBack != 2 || st.OnTrial || st.PreviousVersion != 0 || e.read(t, "a.yaml") != string(pipe("a1")) {
		t.Errorf("got %+v, a.yaml %q; want version 1 restored from 2", st, e.read(t, "a.yaml"))
	}
	if _, err := a.Apply(sign(t, sk, 2, File{"a.yaml", pipe("a2")})); !errors.Is(err, ErrReplay) {
		t.Errorf("version 2 again: got %v, want a replay", err)
	}
}
