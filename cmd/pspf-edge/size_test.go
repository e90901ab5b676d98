package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeadCodeElimination builds the agent with make build's connectors and
// with every connector, with the linker's -dumpdep, and fails if the linker
// saw a call of reflect's Method or MethodByName with a name known only at
// run time (it marks the caller <ReflectMethod>). One such call makes the linker
// keep every exported method of every type that can end up in an interface:
// expr-lang's cost 2.6 MB of the amd64 binary before third_party/expr took
// them out (third_party/README.md). text/template and html/template make
// such calls too.
func TestDeadCodeElimination(t *testing.T) {
	for _, tags := range []string{"no_postgres", ""} {
		t.Run("tags="+tags, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "pspf-edge")
			build := exec.Command("go", "build", "-tags", tags, "-ldflags=-dumpdep", "-o", bin, ".")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err := build.CombinedOutput()
			if err != nil {
				t.Fatalf("build: %v\n%.4000s", err, out)
			}
			if !strings.Contains(string(out), " -> main.main") {
				t.Fatalf("build: no -dumpdep output (%d bytes); cannot check", len(out))
			}
			seen := map[string]bool{}
			for line := range strings.Lines(string(out)) {
				from, _, _ := strings.Cut(line, " -> ")
				if fn, ok := strings.CutSuffix(from, " <ReflectMethod>"); ok && !seen[fn] {
					seen[fn] = true
					t.Errorf("%s calls reflect's Method or MethodByName with a name known only at run time: the linker keeps every exported method", fn)
				}
			}
		})
	}
}

// TestMakeBuildSize builds the agent with `make build` (the tags, flags and
// stripping of what ships) for amd64 and arm64 and holds each binary to
// 15 MiB, as the README promises (Building for boards).
// scripts/size-table.sh shows what each build tag saves; `go tool nm -size
// -sort size` on an unstripped build what grew.
func TestMakeBuildSize(t *testing.T) {
	const limit = 15 << 20
	for _, goarch := range []string{"amd64", "arm64"} {
		t.Run(goarch, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "pspf-edge")
			cmd := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+bin)
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make build: %v\n%s", err, out)
			}
			fi, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes (%.2f MiB)", goarch, fi.Size(), float64(fi.Size())/(1<<20))
			if fi.Size() > limit {
				t.Errorf("%s: make build made %d bytes, over %d (15 MiB) by %d", goarch, fi.Size(), limit, fi.Size()-limit)
			}
		})
	}
}
