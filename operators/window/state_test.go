package window

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestSnapshotEverywhere runs every golden case with the operator rebuilt
// from its table after each input line: the outputs must be those of the
// uninterrupted run. It checks that the compact key encoding keeps all that
// each aggregate's later updates, session merges and results read.
func TestSnapshotEverywhere(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no golden cases")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, input, ok := strings.Cut(string(data), "\n---\n")
			if !ok {
				t.Fatal("no --- line")
			}
			var b strings.Builder
			for line := range strings.Lines(input) {
				b.WriteString(line)
				if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
					b.WriteString("{\"_snapshot\":true}\n")
				}
			}
			want := runCase(t, cfg, input, 1)
			if got := runCase(t, cfg, b.String(), 1); got != want {
				t.Errorf("with a snapshot and restore after every line, got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// appendV1 is the version 1 encoding of an aggregate: its full state.
func appendV1(dst []byte, a *aggState) []byte {
	dst = binary.AppendVarint(dst, a.n)
	for _, v := range [...]float64{a.sum, a.min, a.max, a.mean, a.m2, a.first, a.last, a.prev, a.inc} {
		dst = appendF64(dst, v)
	}
	dst = binary.AppendVarint(dst, a.firstT)
	dst = binary.AppendVarint(dst, a.lastT)
	return append(dst, 0)
}

// TestReadVersion1 checks that aggregates stored by version 1 still read
// back whole, and that version 2 reads back what each function needs.
func TestReadVersion1(t *testing.T) {
	var a aggState
	for i, v := range []float64{3, 1, 4, 1, 5} {
		a.add(fnDelta, v, int64(10-i))
	}
	var got aggState
	d := decoder{b: appendV1(nil, &a)}
	got.read(&d, fnMean, 1)
	if d.err != nil || got != a {
		t.Errorf("version 1: got %+v (err %v), want %+v", got, d.err, a)
	}
	for name, f := range fnNames {
		d := decoder{b: a.appendTo(nil, f)}
		var got aggState
		got.read(&d, f, keyVersion)
		if d.err != nil || len(d.b) != 0 {
			t.Errorf("%s: version 2 read: err %v, %d bytes left", name, d.err, len(d.b))
		}
		if f.quantile() >= 0 {
			continue // no sketch: the state holds only the count
		}
		rg, okg := got.result(f, name)
		rw, okw := a.result(f, name)
		if okg != okw || !reflect.DeepEqual(rg, rw) {
			t.Errorf("%s: result after read: got %+v, want %+v", name, rg, rw)
		}
	}
}
