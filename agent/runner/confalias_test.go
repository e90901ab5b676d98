package runner_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/sources/simulate"
)

// aliasBomb returns a file whose anchors each hold fan aliases of the one
// before: fan^depth values once expanded, from a few hundred bytes. It sits
// in a key that fields.drop-like lists would take, after a valid pipeline.
func aliasBomb(depth, fan int) string {
	var b strings.Builder
	b.WriteString("sources:\n  - simulate: {}\nsinks:\n  - console: {}\ndescription: &a0 lol\n")
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, "buffer: &a%d [%s]\n", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), fan), ","))
	}
	return b.String()
}

// TestAliasBombRefused: a "billion laughs" file is refused with one error at
// the alias that crosses the bound, without expanding it: little time and
// memory, whatever the expansion would be.
func TestAliasBombRefused(t *testing.T) {
	for _, tt := range []struct{ depth, fan int }{{9, 9}, {40, 2}, {6, 100}} {
		t.Run(fmt.Sprintf("%d^%d", tt.fan, tt.depth), func(t *testing.T) {
			text := aliasBomb(tt.depth, tt.fan)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := parse(t, text)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), "aliases expand the file to more than 100000 values") {
				t.Fatalf("got %v, want the alias bound", err)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
				t.Errorf("got %d errors, want 1:\n%v", n, err)
			}
			// The file is a few hundred bytes; a bound 100 times what the
			// check needs leaves room for any allocator, and is far below
			// what an expansion of more than 100000 values takes.
			if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
				t.Errorf("allocated %d bytes for a %d-byte file, want < 8 MiB", got, len(text))
			}
		})
	}
}

func TestAliasCycleRefused(t *testing.T) {
	_, err := parse(t, "sources:\n  - simulate: {}\nsinks:\n  - console: {}\nbuffer: &x [1, *x]\n")
	if want := "pipelines/x.yaml:5: anchor &x contains an alias to itself"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestAliasesExpanded: aliases read as if their values were written out,
// wherever they are: a whole list, an entry, a value with a secret in it.
func TestAliasesExpanded(t *testing.T) {
	t.Setenv("PSPF_PREFIX", "dev-")
	// The landed code read an aliased list as empty: this file was valid,
	// with no source at all.
	_, err := parse(t, "sinks: &out\n  - console: {}\nsources: *out\n")
	if err == nil {
		t.Fatalf("got no error; want the sink list taken as sources to be refused")
	}
	if !strings.Contains(err.Error(), `unknown source type "console"`) {
		t.Errorf("got %v, want the aliased list's entry checked", err)
	}
	spec, err := parse(t, `
sources:
  - simulate: &sim {prefix: "${PSPF_PREFIX}a", sensors: 2}
  - name: second
    simulate: *sim
sinks:
  - console: &con {format: ndjson}
  - name: again
    console: *con
`)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range spec.Sources {
		if c := s.Config.(*simulate.Config); c.Prefix != "dev-a" || c.Sensors != 2 {
			t.Errorf("source %d: got prefix %q sensors %d, want dev-a and 2", i, c.Prefix, c.Sensors)
		}
	}
	plain, err := parse(t, "sources:\n  - simulate: {prefix: \"${PSPF_PREFIX}a\", sensors: 2}\n  - name: second\n    simulate: {prefix: \"${PSPF_PREFIX}a\", sensors: 2}\nsinks:\n  - console: {format: ndjson}\n  - name: again\n    console: {format: ndjson}\n")
	if err != nil {
		t.Fatal(err)
	}
	for i := range spec.Sinks {
		if a, b := spec.Sinks[i].Fingerprint(), plain.Sinks[i].Fingerprint(); a != b {
			t.Errorf("sink %d: fingerprint with an alias %s, written out %s; want the same", i, a[:12], b[:12])
		}
	}
}
