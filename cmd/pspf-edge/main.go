// Command pspf-edge is the edge agent: it runs pipelines that read events from
// MQTT, serial ports and GPIO pins, process them, and forward them upstream
// with store-and-forward buffering.
//
// Exit codes: 0 success; 1 the command ran and found a problem (invalid
// config, failed test, damaged buffer); 2 wrong usage; 3 the agent could not
// start or failed while running.
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitProblem = 1
	exitUsage   = 2
	exitFailure = 3
)

// Version information, stamped with -ldflags -X by make build and
// scripts/cross-build.sh (from git describe and git rev-parse).
var (
	version = "dev"
	commit  = "unknown"
)

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the agent and its pipelines", cmdRun},
		{"validate", "check pipeline files (and the agent file) and list every error", cmdValidate},
		{"topology", "draw a pipeline's chain as text, dot or mermaid", cmdTopology},
		{"test", "run a pipeline over an input file with a virtual clock and compare with the expected output", cmdTest},
		{"schema", "print the JSON Schema of the pipeline file format", cmdSchema},
		{"buffer", "inspect, verify, dump or drop a buffer directory; redrive dead letters", cmdBuffer},
		{"fleet", "manage a fleet: keys, signed pipeline bundles", cmdFleet},
		{"status", "show the running agent's pipelines (admin API)", cmdStatus},
		{"version", "print version, commit, Go version and platform", cmdVersion},
	}
}

func main() {
	disableMemProfile()
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		// Wrong usage: the usage goes with the error output.
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	case "-v", "-version", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "pspf-edge: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pspf-edge: the edge stream-processing agent")
	fmt.Fprintln(w, "\nUsage: pspf-edge COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'pspf-edge COMMAND --help' for a command's flags; 'pspf-edge --version' (-v) is 'pspf-edge version'.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 problem found, 2 usage error, 3 failure.")
}
