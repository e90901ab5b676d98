package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPipelineExamples runs `pspf-edge test` on every example pipeline
// against its case under pipelines/tests/NAME: every example must have one.
func TestPipelineExamples(t *testing.T) {
	files, err := filepath.Glob("../../pipelines/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example pipelines: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("../../pipelines/tests", name)
			var stdout, stderr bytes.Buffer
			code := dispatch([]string{"test", f, "--input", filepath.Join(dir, "input.ndjson"), "--expect", filepath.Join(dir, "expected.ndjson")}, &stdout, &stderr)
			if code != exitOK {
				t.Errorf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
			}
		})
	}
}

// TestTestCommandMismatch checks the exit code and the diff of a failing case.
func TestTestCommandMismatch(t *testing.T) {
	dir := t.TempDir()
	want, err := os.ReadFile("../../pipelines/tests/demo/expected.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(want), "\n")
	bad := strings.Replace(lines[1], `"temp":22.25`, `"temp":22.35`, 1)
	edited := lines[0] + bad + strings.Join(lines[2:], "")
	expect := filepath.Join(dir, "expected.ndjson")
	if err := os.WriteFile(expect, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := dispatch([]string{"test", "../../pipelines/demo.yaml", "--input", "../../pipelines/tests/demo/input.ndjson", "--expect", expect}, &stdout, &stderr)
	if code != exitProblem {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitProblem, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "-"+strings.TrimSuffix(bad, "\n")) || !strings.Contains(out, "+"+strings.TrimSuffix(lines[1], "\n")) {
		t.Errorf("diff does not show the changed line:\n%s", out)
	}

	// --update writes the file; the case then passes.
	stdout.Reset()
	if code := dispatch([]string{"test", "../../pipelines/demo.yaml", "--input", "../../pipelines/tests/demo/input.ndjson", "--expect", expect, "--update"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("update: exit %d: %s", code, stderr.String())
	}
	got, _ := os.ReadFile(expect)
	if string(got) != string(want) {
		t.Errorf("updated file:\n%s\nwant:\n%s", got, want)
	}
}

func TestTestCommandUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"test", "../../pipelines/demo.yaml"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
}
