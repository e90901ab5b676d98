package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args  []string
		json  bool
		limit int
		pos   []string
	}{
		{[]string{"DIR"}, false, 0, []string{"DIR"}},
		{[]string{"DIR", "--limit", "3"}, false, 3, []string{"DIR"}},
		{[]string{"--limit", "3", "DIR"}, false, 3, []string{"DIR"}},
		{[]string{"--limit=3", "DIR"}, false, 3, []string{"DIR"}},
		// A boolean flag takes no value: the argument after it is positional.
		{[]string{"--json", "DIR"}, true, 0, []string{"DIR"}},
		{[]string{"--json", "DIR", "--limit", "3"}, true, 3, []string{"DIR"}},
		{[]string{"-json", "DIR", "EXTRA", "-limit", "3"}, true, 3, []string{"DIR", "EXTRA"}},
		{[]string{"DIR", "--json"}, true, 0, []string{"DIR"}},
		{[]string{"--json=false", "DIR"}, false, 0, []string{"DIR"}},
		// After "--", and a lone "-", arguments stay positional.
		{[]string{"--json", "--", "-DIR", "--limit", "3"}, true, 0, []string{"-DIR", "--limit", "3"}},
		{[]string{"-", "--limit", "3"}, false, 3, []string{"-"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			asJSON := fs.Bool("json", false, "")
			limit := fs.Int("limit", 0, "")
			if err := parseFlags(fs, tt.args); err != nil {
				t.Fatalf("parse %q: %v", tt.args, err)
			}
			if *asJSON != tt.json || *limit != tt.limit || !slices.Equal(fs.Args(), tt.pos) {
				t.Errorf("got json=%v limit=%d args=%q, want json=%v limit=%d args=%q", *asJSON, *limit, fs.Args(), tt.json, tt.limit, tt.pos)
			}
		})
	}
	t.Run("unknown flag", func(t *testing.T) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		if err := parseFlags(fs, []string{"DIR", "--nope"}); err == nil {
			t.Error("got no error for an undefined flag, want one")
		}
	})
	// A valued flag at the end has no value: the internal "--" must not
	// become it.
	for _, args := range [][]string{{"DIR", "--limit"}, {"--json", "DIR", "-limit"}, {"--limit"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.Bool("json", false, "")
			fs.Int("limit", 0, "")
			if err := parseFlags(fs, args); err == nil || !strings.Contains(err.Error(), "flag needs an argument") {
				t.Errorf("got %v, want flag needs an argument", err)
			}
		})
	}
}

// TestValuedFlagAtEnd runs the commands the issue names with a valued flag
// last: each is a usage error (exit 2) that says the flag needs a value,
// never a value "--" taken from the parser's own separator.
func TestValuedFlagAtEnd(t *testing.T) {
	dir := writeLog(t, 3)
	for _, args := range [][]string{
		{"topology", "../../pipelines/demo.yaml", "--format"},
		{"buffer", "dump", dir, "--limit"},
		{"buffer", "dump", dir, "--from"},
		{"validate", "../../pipelines/demo.yaml", "-c"},
		{"test", "../../pipelines/demo.yaml", "--input"},
		{"buffer", "drop", "demo", "--data-dir"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errb := run(t, args...)
			if code != exitUsage || !strings.Contains(errb, "flag needs an argument: -"+strings.TrimLeft(args[len(args)-1], "-")) || strings.Contains(out+errb, `"--"`) {
				t.Errorf("got exit %d, want %d and flag needs an argument:\n%s%s", code, exitUsage, out, errb)
			}
		})
	}
}

// TestBufferFlagsAfterBoolFlag runs `buffer dump` with the boolean --json
// before the directory and a valued flag after it.
func TestBufferFlagsAfterBoolFlag(t *testing.T) {
	dir := writeLog(t, 10)
	code, out, errb := run(t, "buffer", "dump", "--json", dir, "--limit", "2")
	if got := strings.Count(out, "\n"); code != exitOK || got != 2 {
		t.Errorf("got exit %d and %d lines, want %d and 2:\n%s%s", code, got, exitOK, out, errb)
	}
	code, out, errb = run(t, "buffer", "inspect", "--json", dir)
	if code != exitOK || !strings.HasPrefix(out, "{") {
		t.Errorf("got exit %d, want %d and JSON:\n%s%s", code, exitOK, out, errb)
	}
}
