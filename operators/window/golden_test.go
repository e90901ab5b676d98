package window

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// A golden case is testdata/NAME.txt: the operator config (an operators:
// section), a line "---", then one JSON input per line. An input line is a
// record ("_key", "_t" event time in ms, other members are fields), or
// {"_tick": ms} (a timer call at that processing time), or {"_end": true}
// (end of input). The outputs and the dead letters, one per line, are in
// testdata/NAME.golden. Every case runs twice, one record per batch and all
// records of a tick in one batch, and both must give the golden output.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no golden cases")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, input, ok := strings.Cut(string(data), "\n---\n")
			if !ok {
				t.Fatal("no --- line")
			}
			one := runCase(t, cfg, input, 1)
			all := runCase(t, cfg, input, 1<<30)
			if one != all {
				t.Errorf("batch boundaries change the output:\none per batch:\n%s\nall in one:\n%s", one, all)
			}
			golden := strings.TrimSuffix(f, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(one), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if one != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", one, want)
			}
		})
	}
}

// runCase runs the case with at most per records per batch and returns
// outputs and dead letters as text.
func runCase(t *testing.T, cfg, input string, per int) string {
	t.Helper()
	env := agenttest.Env()
	env.Component = "w"
	ops := agenttest.BuildOperators(t, cfg, "window", Factory(), env)
	w := ops[0].(*Window)
	ctx := context.Background()
	var out, dead bytes.Buffer
	b := &agent.Batch{}
	now := base
	flush := func() {
		if len(b.Records) == 0 {
			return
		}
		b.Now = now
		if err := w.Process(ctx, b); err != nil {
			t.Fatal(err)
		}
		write(&out, &dead, b)
		b.Reset()
	}
	sc := bufio.NewScanner(strings.NewReader(input))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("input %q: %v", line, err)
		}
		if v, ok := m["_tick"]; ok {
			flush()
			now = base.Add(time.Duration(v.(float64)) * time.Millisecond)
			b.Now = now
			if err := w.OnTimer(ctx, b); err != nil {
				t.Fatal(err)
			}
			write(&out, &dead, b)
			b.Reset()
			continue
		}
		if _, ok := m["_end"]; ok {
			flush()
			if err := w.EndOfInput(ctx, b); err != nil {
				t.Fatal(err)
			}
			write(&out, &dead, b)
			b.Reset()
			continue
		}
		if _, ok := m["_snapshot"]; ok {
			// Snapshot, then rebuild the operator from its table: the
			// outputs must not change.
			flush()
			if err := w.Snapshot(ctx); err != nil {
				t.Fatal(err)
			}
			table := w.table
			env2 := env
			env2.State = func(time.Duration) (agent.StateTable, error) { return table, nil }
			w2, err := New(w.cfg, env2)
			if err != nil {
				t.Fatal(err)
			}
			w = w2
			continue
		}
		r := agent.Record{}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch v := m[k].(type) {
			case string:
				if k == "_key" {
					r.Key = v
				} else {
					r.Fields = append(r.Fields, agent.String(k, v))
				}
			case float64:
				if k == "_t" {
					r.EventTime = base.UnixNano() + int64(v)*int64(time.Millisecond)
				} else {
					r.Fields = append(r.Fields, agent.Float(k, v))
				}
			case bool:
				r.Fields = append(r.Fields, agent.Bool(k, v))
			}
		}
		r.RecvTime = now.UnixNano()
		b.Records = append(b.Records, r)
		if len(b.Records) >= per {
			flush()
		}
	}
	flush()
	out.Write(dead.Bytes())
	dead.Reset()
	return out.String()
}

// base is the time 0 of the cases: times in inputs are milliseconds after it.
var base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func write(out, dead *bytes.Buffer, b *agent.Batch) {
	for i := range b.Records {
		out.Write(agent.AppendJSON(nil, &b.Records[i]))
		out.WriteByte('\n')
	}
	for _, d := range b.Dead {
		fmt.Fprintf(dead, "dead: %s\n", d.Err)
	}
}

func TestREADMESample(t *testing.T) {
	if ops := agenttest.BuildOperators(t, agenttest.READMESample(t, "README.md"), "window", Factory(), agenttest.Env()); len(ops) != 1 {
		t.Fatalf("got %d operators, want 1", len(ops))
	}
}
