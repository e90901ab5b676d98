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

// TestTestCommandNamesWhatIsMissing: `test PIPELINE` without its flags is a
// usage error that names each missing one.
func TestTestCommandNamesWhatIsMissing(t *testing.T) {
	p := "../../pipelines/demo.yaml"
	for _, tt := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"test", p}, []string{"missing --input FILE", "--expect FILE"}, []string{"PIPELINE file"}},
		{[]string{"test", p, "--input", "in.ndjson"}, []string{"missing --expect FILE"}, []string{"--input FILE"}},
		{[]string{"test", "--input", "in.ndjson", "--expect", "out.ndjson"}, []string{"missing the PIPELINE file"}, []string{"--input FILE"}},
		{[]string{"test", p, p, "--input", "a", "--expect", "b"}, []string{"one PIPELINE file, got 2"}, []string{"missing"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errb := run(t, tt.args...)
			if code != exitUsage {
				t.Errorf("got exit %d, want %d", code, exitUsage)
			}
			for _, w := range tt.want {
				if !strings.Contains(errb, w) {
					t.Errorf("got %q, want it to say %q", errb, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out+errb, n) {
					t.Errorf("got %q, want no %q", out+errb, n)
				}
			}
		})
	}
}
