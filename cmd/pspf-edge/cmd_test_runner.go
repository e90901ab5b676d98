package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// cmdTest is `pspf-edge test`: the deterministic local runner.
func cmdTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	input := fs.String("input", "", "input events, one per line (ndjson)")
	expect := fs.String("expect", "", "expected output, one record per line (ndjson)")
	update := fs.Bool("update", false, "write the output to the --expect file instead of comparing")
	format := fs.String("format", "auto", "input lines: raw (payloads for a decode operator), records (JSON objects with _key, _time, _id and fields), auto (raw when the first operator is decode)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: pspf-edge test PIPELINE --input events.ndjson --expect expected.ndjson [--update]

Runs the pipeline's operators over the input with a virtual clock driven by
event time, without sources, sinks or network, and compares what the sinks
would receive (then the dead letters, with _error) with the expected file.
Exit 0 on a match, 1 with a diff on a mismatch, 2 on wrong usage.

Flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	rest := fs.Args()
	if len(rest) == 0 && *input == "" && *expect == "" {
		fs.Usage()
		return exitUsage
	}
	// Say what is missing rather than the whole usage again.
	var missing []string
	if len(rest) == 0 {
		missing = append(missing, "the PIPELINE file")
	}
	if *input == "" {
		missing = append(missing, "--input FILE (the events to run)")
	}
	if *expect == "" {
		missing = append(missing, "--expect FILE (the expected output; with --update, the file to write)")
	}
	if len(missing) > 0 || len(rest) > 1 {
		if len(missing) > 0 {
			fmt.Fprintf(stderr, "pspf-edge test: missing %s\n", strings.Join(missing, " and "))
		}
		if len(rest) > 1 {
			fmt.Fprintf(stderr, "pspf-edge test: one PIPELINE file, got %d: %s\n", len(rest), strings.Join(rest, " "))
		}
		fmt.Fprintln(stderr, "Usage: pspf-edge test PIPELINE --input events.ndjson --expect expected.ndjson [--update] (--help for more)")
		return exitUsage
	}
	got, err := runTestCase(rest[0], *input, *format)
	if err != nil {
		fmt.Fprintf(stderr, "pspf-edge test: %v\n", err)
		var ces agent.ConfigErrors
		if errors.As(err, &ces) {
			return exitProblem
		}
		return exitFailure
	}
	if *update {
		if err := os.WriteFile(*expect, got, 0o644); err != nil {
			fmt.Fprintf(stderr, "pspf-edge test: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s: wrote %d lines\n", *expect, bytes.Count(got, []byte("\n")))
		return exitOK
	}
	want, err := os.ReadFile(*expect)
	if err != nil {
		fmt.Fprintf(stderr, "pspf-edge test: %v\n", err)
		return exitFailure
	}
	if d := lineDiff(splitLines(want), splitLines(got)); d != "" {
		fmt.Fprintf(stdout, "%s: output differs from %s (-expected +got):\n%s", rest[0], *expect, d)
		return exitProblem
	}
	fmt.Fprintf(stdout, "%s: ok (%d lines)\n", rest[0], bytes.Count(got, []byte("\n")))
	return exitOK
}

// runTestCase runs the pipeline file over the input file and returns the
// output as ndjson: the records, then the dead letters.
func runTestCase(pipelineFile, inputFile, format string) ([]byte, error) {
	reg := newRegistry()
	spec, err := reg.LoadPipelineFile(pipelineFile, runner.DefaultAgentConfig().Defaults)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(inputFile)
	if err != nil {
		return nil, err
	}
	if format == "auto" {
		format = "records"
		if len(spec.Operators) > 0 && spec.Operators[0].Type == "decode" {
			format = "raw"
		}
	}
	recs, err := parseInput(data, format)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", inputFile, err)
	}
	dir, err := os.MkdirTemp("", "pspf-edge-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	res, err := runner.RunLocal(context.Background(), spec, reg, dir, recs)
	if err != nil {
		return nil, err
	}
	var out []byte
	for i := range res.Records {
		out = agent.AppendJSON(out, &res.Records[i])
		out = append(out, '\n')
	}
	for i := range res.Dead {
		out = agent.AppendJSON(out, &res.Dead[i])
		out = append(out, '\n')
	}
	return out, nil
}

// parseInput turns input lines into records: raw payloads, or JSON objects
// whose _key, _id and _time (RFC 3339) are metadata and whose other members
// are fields (integers as ints, other numbers as floats).
func parseInput(data []byte, format string) ([]agent.Record, error) {
	var out []agent.Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		switch format {
		case "raw":
			out = append(out, agent.Record{Raw: bytes.Clone(line)})
		case "records":
			r, err := parseRecord(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			out = append(out, r)
		default:
			return nil, fmt.Errorf("unknown input format %q: want raw, records or auto", format)
		}
	}
	return out, sc.Err()
}

func parseRecord(line []byte) (agent.Record, error) {
	var r agent.Record
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return r, err
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		switch v := m[k].(type) {
		case string:
			switch k {
			case "_key":
				r.Key = v
			case "_id":
				r.ID = v
			case "_time":
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return r, fmt.Errorf("_time: %w", err)
				}
				r.EventTime = t.UnixNano()
			default:
				r.Fields = append(r.Fields, agent.String(k, v))
			}
		case json.Number:
			if i, err := v.Int64(); err == nil {
				r.Fields = append(r.Fields, agent.Int(k, i))
			} else if f, err := v.Float64(); err == nil {
				r.Fields = append(r.Fields, agent.Float(k, f))
			}
		case bool:
			r.Fields = append(r.Fields, agent.Bool(k, v))
		case nil:
		default:
			return r, fmt.Errorf("%s: nested values are not supported in records input", k)
		}
	}
	return r, nil
}

func splitLines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// lineDiff returns a unified-style diff of a and b (lines prefixed with
// " ", "-" or "+", runs of unchanged lines cut to 2 of context), or "" if
// they are equal.
func lineDiff(a, b []string) string {
	if len(a) > 4000 || len(b) > 4000 {
		for i := 0; i < max(len(a), len(b)); i++ {
			if i >= len(a) || i >= len(b) || a[i] != b[i] {
				return fmt.Sprintf("first difference at line %d:\n-%s\n+%s\n", i+1, at(a, i), at(b, i))
			}
		}
		return ""
	}
	// Longest common subsequence, then walk it.
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		c    byte
		line string
	}
	var ops []op
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, op{' ', a[i]})
			i++
			j++
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			ops = append(ops, op{'+', b[j]})
			j++
		default:
			ops = append(ops, op{'-', a[i]})
			i++
		}
	}
	changed := false
	var sb strings.Builder
	for k, o := range ops {
		if o.c != ' ' {
			changed = true
			fmt.Fprintf(&sb, "%c%s\n", o.c, o.line)
			continue
		}
		near := false
		for d := -2; d <= 2; d++ {
			if k+d >= 0 && k+d < len(ops) && ops[k+d].c != ' ' {
				near = true
			}
		}
		if near {
			fmt.Fprintf(&sb, " %s\n", o.line)
		} else if k > 0 && ops[k-1].c == ' ' && k >= 3 && !strings.HasSuffix(sb.String(), "...\n") {
			sb.WriteString("...\n")
		}
	}
	if !changed {
		return ""
	}
	return sb.String()
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(end of file)"
}
