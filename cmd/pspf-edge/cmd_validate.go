package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "agent config file to validate too, and whose defaults apply")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge validate [-c agent.yaml] FILE|DIR ...\n\nChecks pipeline files and lists every error as file:line: path: rule.\nExit 0 if all are valid, 1 if any is not.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() == 0 && *cfgPath == "" {
		fs.Usage()
		return exitUsage
	}
	cfg, err := loadAgentConfig(*cfgPath)
	bad := 0
	if err != nil {
		fmt.Fprintln(stderr, err)
		bad++
	}
	reg := newRegistry()
	good := 0
	for _, arg := range fs.Args() {
		files := []string{arg}
		if st, err := os.Stat(arg); err == nil && st.IsDir() {
			if files, err = runner.PipelineFiles(arg); err != nil {
				fmt.Fprintln(stderr, err)
				bad++
				continue
			}
		}
		for _, f := range files {
			if _, err := reg.LoadPipelineFile(f, cfg.Defaults); err != nil {
				var ces agent.ConfigErrors
				if errors.As(err, &ces) {
					for _, e := range ces {
						fmt.Fprintln(stderr, e)
					}
				} else {
					fmt.Fprintln(stderr, err)
				}
				bad++
				continue
			}
			good++
			fmt.Fprintf(stdout, "%s: ok\n", f)
		}
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "%d invalid, %d valid\n", bad, good)
		return exitProblem
	}
	return exitOK
}
