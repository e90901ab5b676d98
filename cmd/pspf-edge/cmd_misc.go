package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func cmdSchema(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge schema > pipeline.schema.json\n\nPrints the JSON Schema of pipeline files, for editors (for example the YAML\nlanguage server: # yaml-language-server: $schema=pipeline.schema.json).")
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(newRegistry().Schema()); err != nil {
		fmt.Fprintln(stderr, "schema:", err)
		return exitFailure
	}
	return exitOK
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge version\n\nPrints version, commit, Go version, OS and architecture, and the build tags\n(what the binary leaves out: README, Building for boards).")
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	c := commit
	if c == "unknown" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	arch := runtime.GOARCH
	if arch == "arm" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" {
					arch += "v" + s.Value
				}
			}
		}
	}
	fmt.Fprintf(stdout, "pspf-edge %s\ncommit %s\n%s %s/%s\ntags %s\n", version, c, runtime.Version(), runtime.GOOS, arch, buildTags())
	return exitOK
}

// buildTags returns the build tags the binary was built with, comma-separated
// (no_postgres,nethttpomithttp2 for make build), or "none".
func buildTags() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-tags" && s.Value != "" {
				return s.Value
			}
		}
	}
	return "none"
}
