package runner_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/state"
)

// chanSource emits the batches sent on its channel and blocks otherwise;
// closing the channel ends it.
type chanSource struct{ in chan []agent.Record }

func (s chanSource) Connect(context.Context) error { return nil }
func (s chanSource) Close(context.Context) error   { return nil }
func (s chanSource) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case b, ok := <-s.in:
		if !ok {
			return nil, nil, io.EOF
		}
		return b, func(context.Context, error) {}, nil
	}
}

// stateHarness runs a windowed pipeline, run after run, over one data
// directory, with one metrics registry and one log: like the agent
// restarting a pipeline.
type stateHarness struct {
	t       *testing.T
	dir     string
	buffer  string // the pipeline's buffer: block
	size    string // the window size
	cache   int64
	metrics *runner.Metrics
	logs    *agenttest.LogBuffer
	out     []agent.Record // every output delivered, in order
}

func newStateHarness(t *testing.T, buffer string) *stateHarness {
	return &stateHarness{t: t, dir: t.TempDir(), buffer: buffer, size: "1s", metrics: runner.NewMetrics(), logs: &agenttest.LogBuffer{}}
}

const damagePipeline = `
sources: [{script: {}}]
operators:
  - window: {type: tumbling, size: SIZE, aggregates: [{fn: sum, field: v}, {fn: count}]}
sinks: [{rec: {}, retry: {initial: 1ms, max: 5ms}}]
`

// pipeline builds the pipeline over src; its outputs are added to h.out
// when the run ends.
func (h *stateHarness) pipeline(src agent.Source) (*runner.Pipeline, *agenttest.RecordingSink, error) {
	h.t.Helper()
	sink := &agenttest.RecordingSink{}
	reg := windowRegistry(src, sink)
	spec, err := reg.ParsePipeline("w.yaml", []byte(strings.Replace(damagePipeline, "SIZE", h.size, 1)+h.buffer), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		h.t.Fatalf("parse: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(h.logs, nil))
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, DataDir: h.dir, Metrics: h.metrics, Logger: logger,
		OpenLog: runner.OpenDiskLog(logger), ShutdownTimeout: 10 * time.Second, CheckpointInterval: 20 * time.Millisecond,
		StateCacheBytes: h.cache})
	return p, sink, err
}

// run runs the pipeline over batches until it has processed and delivered
// them, and returns its status.
func (h *stateHarness) run(batches ...[]agent.Record) runner.Status {
	h.t.Helper()
	p, sink, err := h.pipeline(agenttest.NewScriptSource(batches...))
	if err != nil {
		h.t.Fatalf("new pipeline: %v\n%s", err, h.logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		h.t.Fatalf("run: %v\n%s", err, h.logs)
	}
	h.out = append(h.out, sink.Records()...)
	return p.Status()
}

// windowStart is the window start in an output's ID, pipeline:op:key:start.
func windowStart(t *testing.T, id string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(id[strings.LastIndexByte(id, ':')+1:], 10, 64)
	if err != nil {
		t.Fatalf("output ID %q: %v", id, err)
	}
	return n
}

func outputValue(r agent.Record) string {
	return fmt.Sprintf("sum=%v count=%v", r.Field("v_sum").Float, r.Field("count").Int)
}

// firstValues maps each output ID to the value first delivered for it, and
// counts the deliveries of an ID beyond its first.
func firstValues(recs []agent.Record) (first map[string]string, again int) {
	first = map[string]string{}
	for _, r := range recs {
		if _, ok := first[r.ID]; ok {
			again++
			continue
		}
		first[r.ID] = outputValue(r)
	}
	return first, again
}

// damageTable lists the ways a state file is found damaged or gone, with
// what recovery must do about each.
var damageTable = []struct {
	name   string
	damage func(t *testing.T, path string)
	aside  bool   // the file is moved aside
	reset  bool   // the state restarts empty: WARN and count
	warn   string // in the log
}{
	{"both meta pages flipped", func(t *testing.T, path string) { flipBytes(t, path, 16, 80); flipBytes(t, path, 4096+16, 4096+80) },
		true, true, "state file damaged: moved aside"},
	{"the root page flipped", func(t *testing.T, path string) {
		root := metaField(t, path, 16) // the root bucket's page
		flipBytes(t, path, root*4096, root*4096+4096)
	}, true, true, "state file damaged: moved aside"},
	{"truncated to half", func(t *testing.T, path string) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		used := usedBytes(t, path)
		if err := os.Truncate(path, min(st.Size(), used)/2); err != nil {
			t.Fatal(err)
		}
	}, true, true, "state file damaged: moved aside"},
	{"emptied", func(t *testing.T, path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	}, false, true, "state file missing or empty"},
	{"deleted", func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}, false, true, "state file missing or empty"},
	{"a byte of a value changed", func(t *testing.T, path string) { changeValue(t, path) },
		true, true, `stored value fails its checksum`},
	{"the newest meta page flipped", func(t *testing.T, path string) {
		// bbolt opens at the older meta page: the previous checkpoint,
		// recovered as after a crash.
		off := int64(0)
		if metaFieldOf(t, path, 1, 48) > metaFieldOf(t, path, 0, 48) {
			off = 4096
		}
		flipBytes(t, path, off+16, off+80)
	}, false, false, "meta pages is invalid"},
}

// changeValue changes the last byte of the first value of the first
// table in the bbolt file at path, through bbolt: the pages stay well
// formed, only the value's checksum (state/value.go) can tell. It returns
// the table and the key, in hex.
func changeValue(t *testing.T, path string) (table, key string) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			tname, ok := strings.CutPrefix(string(name), "t/")
			if !ok || table != "" {
				return nil
			}
			k, v := b.Cursor().First()
			if k == nil {
				return nil
			}
			table, key = tname, hex.EncodeToString(k)
			v = bytes.Clone(v)
			v[len(v)-1] ^= 0x5a
			return b.Put(bytes.Clone(k), v)
		})
	})
	if err != nil || table == "" {
		t.Fatalf("change a value: %v (table %q)", err, table)
	}
	return table, key
}

// metaFieldOf reads the 8-byte field at off in meta page i of the bbolt
// file at path (go.etcd.io/bbolt's meta: root page at 16, freelist 32,
// high-water mark 40, transaction id 48; native byte order).
func metaFieldOf(t *testing.T, path string, i, off int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], i*4096+16+off); err != nil {
		t.Fatal(err)
	}
	return int64(binary.NativeEndian.Uint64(b[:]))
}

// metaField reads a field of the newest meta page.
func metaField(t *testing.T, path string, off int64) int64 {
	t.Helper()
	i := int64(0)
	if metaFieldOf(t, path, 1, 48) > metaFieldOf(t, path, 0, 48) {
		i = 1
	}
	return metaFieldOf(t, path, i, off)
}

// usedBytes is the size of the pages a bbolt file uses (its high-water
// mark); bbolt grows files in large steps of zeros.
func usedBytes(t *testing.T, path string) int64 {
	return max(metaFieldOf(t, path, 0, 40), metaFieldOf(t, path, 1, 40)) * 4096
}

func flipBytes(t *testing.T, path string, from, to int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, to-from)
	if _, err := f.ReadAt(b, from); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0x5a
	}
	if _, err := f.WriteAt(b, from); err != nil {
		t.Fatal(err)
	}
}

// TestStatefulStateDamage runs a windowed pipeline twice over one data
// directory, damaging its state.db (or emptying, or deleting it) between
// the runs. The second run must start (never fail for good), move a damaged
// file aside, warn, count the reset, and rebuild the state from the log:
// with the log holding every record, every window comes out exactly as in a
// run without damage, none delivered twice.
func TestStatefulStateDamage(t *testing.T) {
	first, second := readings(0, 400), readings(400, 200)
	ref := newStateHarness(t, "")
	ref.run(first)
	ref.run(second)
	want, again := firstValues(ref.out)
	if again != 0 || len(want) < 50 {
		t.Fatalf("reference: %d outputs, %d again; want 50 or more, none again", len(want), again)
	}
	for _, c := range damageTable {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			h := newStateHarness(t, "")
			h.run(first)
			path := filepath.Join(h.dir, "state.db")
			c.damage(t, path)
			st := h.run(second)
			logs := h.logs.String()
			if !strings.Contains(logs, c.warn) {
				t.Errorf("log lacks %q:\n%s", c.warn, logs)
			}
			aside, err := state.AsideFiles(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(aside) == 1; got != c.aside {
				t.Errorf("moved aside: %v, want %v", aside, c.aside)
			}
			if wantResets := map[bool]uint64{true: 1}[c.reset]; st.StateResets != wantResets {
				t.Errorf("state_resets %d, want %d", st.StateResets, wantResets)
			}
			if c.reset && !strings.Contains(logs, "replay_from=1 ") {
				t.Errorf("the reset should replay the log from record 1:\n%s", logs)
			}
			got, again := firstValues(h.out)
			if again != 0 {
				t.Errorf("%d outputs delivered again, want 0 (the outputs sent before the reset are not emitted again)", again)
			}
			for id, w := range want {
				if got[id] != w {
					t.Errorf("output %s: got %q, want %q", id, got[id], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d outputs, want %d", len(got), len(want))
			}
		})
	}
}

// TestStatefulValueDamageNamed: the WARN of a reset for a value whose
// checksum fails names the table and the key, so that the operator who
// reads it knows what state was damaged.
func TestStatefulValueDamageNamed(t *testing.T) {
	h := newStateHarness(t, "")
	h.run(readings(0, 400))
	table, key := changeValue(t, filepath.Join(h.dir, "state.db"))
	if st := h.run(readings(400, 200)); st.StateResets != 1 {
		t.Errorf("state_resets %d, want 1", st.StateResets)
	}
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, "state file damaged: moved aside") {
			if want := fmt.Sprintf(`table \"%s\": key %s: stored value fails its checksum`, table, key); !strings.Contains(line, want) {
				t.Errorf("WARN does not name the table and key (%s):\n%s", want, line)
			}
			return
		}
	}
	t.Errorf("no WARN of the reset:\n%s", h.logs)
}

// TestStatefulStateDamageShortLog damages state.db when the pipeline log no
// longer holds its oldest records (small segments, acked and deleted): the
// state built from them is lost, as the WARN says. Windows that begin after
// the oldest retained record come out exactly as without damage; a window
// that began before it may come out with fewer records, under the same ID
// as its complete version delivered before the damage, which a consumer
// that drops duplicates by ID keeps.
func TestStatefulStateDamageShortLog(t *testing.T) {
	const buf = "buffer: {segment_bytes: 64KiB, max_bytes: 64MiB}\n"
	first, second := readings(0, 3000), readings(3000, 1500)
	ref := newStateHarness(t, buf)
	ref.size = "1m"
	ref.run(first)
	ref.run(second)
	want, _ := firstValues(ref.out)

	h := newStateHarness(t, buf)
	h.size = "1m"
	h.run(first)
	sent := len(h.out)
	flipBytes(t, filepath.Join(h.dir, "state.db"), 16, 80)
	flipBytes(t, filepath.Join(h.dir, "state.db"), 4096+16, 4096+80)
	st := h.run(second)
	if st.StateResets != 1 {
		t.Errorf("state_resets %d, want 1", st.StateResets)
	}
	logs := h.logs.String()
	i := strings.Index(logs, "replay_from=")
	if i < 0 {
		t.Fatalf("no reset logged:\n%s", logs)
	}
	from, err := strconv.Atoi(strings.Fields(logs[i+len("replay_from="):])[0])
	if err != nil || from <= 1 || from > 3000 {
		t.Fatalf("replay_from=%d (%v), want inside the first run's records", from, err)
	}
	if !strings.Contains(logs, fmt.Sprintf("records before %d, which the log no longer holds", from)) {
		t.Errorf("the WARN should say what may be lost:\n%s", logs)
	}
	// Readings are 100 ms apart in event time from record 1 (reading 0).
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	complete := base + int64(from-1)*int64(100*time.Millisecond) // event time of the oldest record replayed
	got, _ := firstValues(h.out)
	partial := 0
	for id, w := range want {
		switch {
		case got[id] == w:
		case windowStart(t, id) < complete:
			partial++ // began before the oldest retained record
		default:
			t.Errorf("output %s: got %q, want %q", id, got[id], w)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok && windowStart(t, id) >= complete {
			t.Errorf("output %s not in the run without damage", id)
		}
	}
	t.Logf("replay from %d of %d; %d outputs before the damage, %d after; %d windows differ, all begun before the replay",
		from, 4500, sent, len(h.out)-sent, partial)
	if partial == 0 {
		t.Error("no window spanned the oldest retained record: the test does not show what a reset loses")
	}
}

// TestStatefulDamageWhileRunning damages state.db under a running
// pipeline. The stage meets the damage at its next checkpoint, stops
// without committing anything from it, and Run ends on its own with an
// error wrapping state.ErrCorrupt (the supervisor starts the pipeline
// again). The next start moves the file aside, warns, and rebuilds the
// state from the log: every window comes out with the value of a run
// without damage.
func TestStatefulDamageWhileRunning(t *testing.T) {
	batches := [][]agent.Record{readings(0, 300), readings(300, 300), readings(600, 300)}
	ref := newStateHarness(t, "")
	ref.run(batches...)
	want, _ := firstValues(ref.out)

	h := newStateHarness(t, "")
	in := make(chan []agent.Record, 3)
	p, sink, err := h.pipeline(chanSource{in})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	in <- batches[0]
	path := filepath.Join(h.dir, "state.db")
	agenttest.Eventually(t, 30*time.Second, "the first batch checkpointed", func() bool {
		return p.Status().Operators[0].RecordsIn >= 300 && h.metrics.Counter("pspf_checkpoints_total", "pipeline", "w").Get() >= 3
	}, h.logs)
	// Zero every page but the meta pages: the next commit meets them.
	used := usedBytes(t, path)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, used-2*4096), 2*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	in <- batches[1]
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not end after the damage\n%s", h.logs)
	}
	if !errors.Is(err, state.ErrCorrupt) {
		t.Fatalf("Run = %v, want an error wrapping state.ErrCorrupt\n%s", err, h.logs)
	}
	h.out = append(h.out, sink.Records()...)
	if _, err := os.Stat(path + ".suspect"); err != nil {
		t.Errorf("no note of the damage beside the file: %v", err)
	}
	// The second batch is in the log already: the new run reads the third.
	st := h.run(batches[2])
	if !strings.Contains(h.logs.String(), "state file damaged: moved aside") {
		t.Errorf("no WARN of the reset:\n%s", h.logs)
	}
	if aside, _ := state.AsideFiles(path); len(aside) != 1 {
		t.Errorf("moved aside: %v, want one copy", aside)
	}
	if st.StateResets != 1 {
		t.Errorf("state_resets %d, want 1", st.StateResets)
	}
	got, _ := firstValues(h.out)
	for id, w := range want {
		if got[id] != w {
			t.Errorf("output %s: got %q, want %q", id, got[id], w)
		}
	}
}
