package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pspf/pspf-edge/agent/runner"
)

func cmdTopology(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("topology", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "text", "output format: text, dot or mermaid")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge topology [--format text|dot|mermaid] FILE\n\nDraws the pipeline's chain: sources, operators, the log, sinks.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	reg := newRegistry()
	spec, err := reg.LoadPipelineFile(fs.Arg(0), runner.DefaultAgentConfig().Defaults)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	g := buildGraph(spec, reg)
	switch *format {
	case "text":
		io.WriteString(stdout, g.text())
	case "dot":
		io.WriteString(stdout, g.dot())
	case "mermaid":
		io.WriteString(stdout, g.mermaid())
	default:
		fmt.Fprintf(stderr, "topology: --format must be text, dot or mermaid, got %q\n", *format)
		return exitUsage
	}
	return exitOK
}

type node struct{ id, label, kind string }

type graph struct {
	name    string
	stages  [][]node // columns: sources, each operator, log, sinks
	deadLtr *node
}

func buildGraph(spec *runner.PipelineSpec, reg *runner.Registry) graph {
	g := graph{name: spec.Name}
	var col []node
	for i, s := range spec.Sources {
		col = append(col, node{fmt.Sprintf("src%d", i), label(s), "source"})
	}
	g.stages = append(g.stages, col)
	split := spec.StatefulIndex(reg)
	for i, o := range spec.Operators {
		if i == split {
			g.stages = append(g.stages, []node{{"log", logLabel(spec), "log"}})
		}
		g.stages = append(g.stages, []node{{fmt.Sprintf("op%d", i), label(o), "operator"}})
	}
	if split == len(spec.Operators) {
		g.stages = append(g.stages, []node{{"log", logLabel(spec), "log"}})
	}
	col = nil
	for i, s := range spec.Sinks {
		col = append(col, node{fmt.Sprintf("sink%d", i), label(s), "sink"})
	}
	g.stages = append(g.stages, col)
	if spec.DeadLetter != nil {
		g.deadLtr = &node{"dead", "dead letters → " + label(*spec.DeadLetter), "sink"}
	}
	return g
}

// logLabel describes the pipeline log, its cap in the units a config file
// uses (256MiB), as written.
func logLabel(spec *runner.PipelineSpec) string {
	return "pipeline log (" + spec.Buffer.Kind + ", " + spec.Buffer.MaxBytes.String() + ", " + spec.Buffer.Overflow + ")"
}

func label(c runner.ComponentSpec) string {
	if c.Name != c.Type {
		return c.Name + " (" + c.Type + ")"
	}
	return c.Type
}

func (g graph) edges(fn func(from, to node)) {
	for i := 0; i+1 < len(g.stages); i++ {
		for _, a := range g.stages[i] {
			for _, b := range g.stages[i+1] {
				fn(a, b)
			}
		}
	}
}

func (g graph) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pipeline %s\n", g.name)
	for i, col := range g.stages {
		names := make([]string, len(col))
		for j, n := range col {
			names[j] = n.label
		}
		prefix := "  "
		if i > 0 {
			prefix = "  └─▶ "
			b.WriteString(strings.Repeat("  ", i-1))
		}
		fmt.Fprintf(&b, "%s[%s] %s\n", prefix, col[0].kind, strings.Join(names, " | "))
	}
	if g.deadLtr != nil {
		fmt.Fprintf(&b, "  (rejected records) ─▶ %s\n", g.deadLtr.label)
	}
	return b.String()
}

func (g graph) dot() string {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n", g.name)
	shapes := map[string]string{"source": "invhouse", "operator": "box", "log": "cylinder", "sink": "house"}
	for _, col := range g.stages {
		for _, n := range col {
			fmt.Fprintf(&b, "  %s [label=%q shape=%s];\n", n.id, n.label, shapes[n.kind])
		}
	}
	g.edges(func(a, c node) { fmt.Fprintf(&b, "  %s -> %s;\n", a.id, c.id) })
	if d := g.deadLtr; d != nil {
		fmt.Fprintf(&b, "  %s [label=%q shape=house style=dashed];\n", d.id, d.label)
	}
	b.WriteString("}\n")
	return b.String()
}

func (g graph) mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for _, col := range g.stages {
		for _, n := range col {
			l := strings.ReplaceAll(n.label, `"`, "'")
			switch n.kind {
			case "log":
				fmt.Fprintf(&b, "  %s[(\"%s\")]\n", n.id, l)
			case "source":
				fmt.Fprintf(&b, "  %s>\"%s\"]\n", n.id, l)
			default:
				fmt.Fprintf(&b, "  %s[\"%s\"]\n", n.id, l)
			}
		}
	}
	g.edges(func(a, c node) { fmt.Fprintf(&b, "  %s --> %s\n", a.id, c.id) })
	if d := g.deadLtr; d != nil {
		fmt.Fprintf(&b, "  %s[\"%s\"]\n", d.id, strings.ReplaceAll(d.label, `"`, "'"))
	}
	return b.String()
}
