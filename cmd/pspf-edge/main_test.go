package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var typeList = regexp.MustCompile(`((?:unknown|names no) (?:source|operator|sink) type.*expected one of:).*`)

// run calls the CLI in-process and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestValidateGolden checks the error messages for a set of bad configs: each
// testdata/validate/NAME.yaml has its expected output in NAME.golden.
func TestValidateGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/validate/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	t.Setenv("PSPF_TEST_SECRET", "hunter2")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			code, _, stderr := run(t, "validate", f)
			// The lists of registered types grow with every connector; the
			// golden files hold a placeholder so that they need not.
			stderr = typeList.ReplaceAllString(stderr, "$1 <registered types>")
			if code != exitProblem {
				t.Errorf("got exit %d, want %d", code, exitProblem)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Errorf("a secret was printed:\n%s", stderr)
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(stderr), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden: %v", err)
			}
			if stderr != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", stderr, want)
			}
		})
	}
}

// TestExamplePipelinesValidate validates every file in pipelines/.
func TestExamplePipelinesValidate(t *testing.T) {
	files, err := filepath.Glob("../../pipelines/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example pipelines: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			code, _, stderr := run(t, "validate", f)
			// The lists of registered types grow with every connector; the
			// golden files hold a placeholder so that they need not.
			stderr = typeList.ReplaceAllString(stderr, "$1 <registered types>")
			if code != exitOK {
				t.Errorf("got exit %d, want 0:\n%s", code, stderr)
			}
		})
	}
}

func TestUsageAndHelp(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, exitOK, "Commands:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"run", "--help"}, exitOK, "Usage: pspf-edge run"},
		{[]string{"validate", "--help"}, exitOK, "Usage: pspf-edge validate"},
		{[]string{"topology", "--help"}, exitOK, "Usage: pspf-edge topology"},
		{[]string{"schema", "--help"}, exitOK, "Usage: pspf-edge schema"},
		{[]string{"version", "--help"}, exitOK, "Usage: pspf-edge version"},
		{[]string{"buffer", "--help"}, exitOK, "Usage: pspf-edge buffer"},
		{[]string{"validate"}, exitUsage, "Usage: pspf-edge validate"},
		{[]string{"validate", "does-not-exist.yaml"}, exitProblem, "does-not-exist.yaml: cannot read"},
		// -c may follow the files; its value is not taken for a file.
		{[]string{"validate", "../../pipelines/demo.yaml", "-c", "does-not-exist.yaml"}, exitProblem, "config: open does-not-exist.yaml"},
		{[]string{"validate", "../../pipelines/demo.yaml", "-c", "../../packaging/agent.yaml"}, exitOK, "demo.yaml: ok"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errb := run(t, tt.args...)
			if code != tt.code {
				t.Errorf("got exit %d, want %d", code, tt.code)
			}
			if !strings.Contains(out+errb, tt.want) {
				t.Errorf("got output %q, want it to contain %q", out+errb, tt.want)
			}
		})
	}
}

// TestNoArguments: no command at all is wrong usage: the usage goes to
// stderr, nothing to stdout, exit 2. --help asks for it: stdout, exit 0.
func TestNoArguments(t *testing.T) {
	code, out, errb := run(t)
	if code != exitUsage || out != "" || !strings.Contains(errb, "Commands:") {
		t.Errorf("got exit %d, stdout %q, stderr %q; want %d, nothing, the usage", code, out, errb, exitUsage)
	}
	code, out, errb = run(t, "--help")
	if code != exitOK || errb != "" || !strings.Contains(out, "Commands:") {
		t.Errorf("--help: got exit %d, stdout %q, stderr %q; want 0, the usage, nothing", code, out, errb)
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-v", "-version"} {
		t.Run(arg, func(t *testing.T) {
			code, out, errb := run(t, arg)
			if code != exitOK {
				t.Fatalf("got exit %d: %s", code, errb)
			}
			for _, want := range []string{"pspf-edge dev", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH} {
				if !strings.Contains(out, want) {
					t.Errorf("got %q, want it to contain %q", out, want)
				}
			}
		})
	}
}

// TestMakeBuildStampsVersion runs `make build` into a temporary file: the
// binary must say the tree's git describe and commit, not dev / unknown,
// and the build tags it leaves out.
func TestMakeBuildStampsVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pspf-edge")
	cmd := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", "../.."}, args...)...).Output()
		if err != nil {
			t.Fatalf("git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	describe := git("describe", "--tags", "--always", "--dirty")
	commit := git("rev-parse", "--short=12", "HEAD")
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if want := "pspf-edge " + describe + "\ncommit " + commit + "\n"; !strings.HasPrefix(string(out), want) {
		t.Errorf("got %q, want it to start with %q", out, want)
	}
	if want := "\ntags no_postgres,nethttpomithttp2\n"; !strings.Contains(string(out), want) {
		t.Errorf("got %q, want it to contain %q", out, want)
	}
}

func TestTopologyFormats(t *testing.T) {
	for format, want := range map[string]string{
		"text":    "[sink] console | file",
		"dot":     "digraph \"demo\"",
		"mermaid": "flowchart LR",
	} {
		t.Run(format, func(t *testing.T) {
			code, out, errb := run(t, "topology", "../../pipelines/demo.yaml", "--format", format)
			if code != exitOK {
				t.Fatalf("got exit %d: %s", code, errb)
			}
			if !strings.Contains(out, want) {
				t.Errorf("got:\n%s\nwant it to contain %q", out, want)
			}
		})
	}
	// The log's cap as a config file writes it, the demo's default and one
	// written in decimal units.
	if code, out, errb := run(t, "topology", "../../pipelines/demo.yaml"); code != exitOK || !strings.Contains(out, "[log] pipeline log (disk, 256MiB, block)") {
		t.Errorf("got exit %d:\n%s%s\nwant the log as (disk, 256MiB, block)", code, out, errb)
	}
	p := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(p, []byte("sources: [{simulate: {}}]\nsinks: [{console: {}}]\nbuffer: {max_bytes: 100MB, overflow: drop_oldest}\n"), 0o644)
	if code, out, errb := run(t, "topology", p, "--format", "dot"); code != exitOK || !strings.Contains(out, "pipeline log (disk, 100MB, drop_oldest)") {
		t.Errorf("got exit %d:\n%s%s\nwant the log as (disk, 100MB, drop_oldest)", code, out, errb)
	}
	if code, _, _ := run(t, "topology", "--format", "png", "../../pipelines/demo.yaml"); code != exitUsage {
		t.Errorf("got exit %d for an unknown format, want %d", code, exitUsage)
	}
}

func TestSchemaIsJSONWithEveryComponent(t *testing.T) {
	code, out, _ := run(t, "schema")
	if code != exitOK {
		t.Fatalf("got exit %d", code)
	}
	reg := newRegistry()
	for name := range reg.Sources {
		if !strings.Contains(out, `"`+name+`"`) {
			t.Errorf("schema lacks source %q", name)
		}
	}
	for name := range reg.Operators {
		if !strings.Contains(out, `"`+name+`"`) {
			t.Errorf("schema lacks operator %q", name)
		}
	}
	for name := range reg.Sinks {
		if !strings.Contains(out, `"`+name+`"`) {
			t.Errorf("schema lacks sink %q", name)
		}
	}
	if !json.Valid([]byte(out)) {
		t.Error("schema is not valid JSON")
	}
}
