package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/buffer"
	"github.com/pspf/pspf-edge/internal/atomicfile"
)

func bufferUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: pspf-edge buffer inspect|verify|dump DIR
       pspf-edge buffer drop NAME --yes
       pspf-edge buffer redrive NAME --sink SINK

  inspect DIR [--json]                 segments, records, bytes, cursors, oldest record age
  verify DIR                           full CRC scan; exit 1 on damage, saying what and where
  dump DIR [--from SEQ] [--limit N]    records as NDJSON, each with its sequence in "_seq"
  drop NAME --yes [-c agent.yaml | --data-dir DIR]
                                       delete a removed pipeline's data (log, dead
                                       letters, state) for good; refused while an
                                       agent runs on the data directory
  redrive NAME --sink SINK [--all] [-c agent.yaml] [--data-dir DIR] [-p DIR]
          [--timeout 10m] [--progress 2s]
                                       send pipeline NAME's dead letters (those SINK
                                       refused; --all: every one) through its sink
                                       SINK, oldest first, with their IDs; refused
                                       while an agent runs on the data directory.
                                       Idempotent: a cursor in the dead-letter log
                                       remembers what went through, and a dead letter
                                       is acked (and its segment freed) only once the
                                       sink accepted it; refused again, it is kept

DIR is a log directory, such as DATA_DIR/pipelines/NAME/log (the pipeline log)
or DATA_DIR/pipelines/NAME/dead (its dead letters). inspect, verify and dump
only read: run them on a stopped agent or a copy. --json uses the admin API's
names (first_seq, next_seq, disk_bytes, acked, backlog).`)
}

func cmdBuffer(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		bufferUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "drop":
		return bufferDrop(args[1:], stdout, stderr)
	case "redrive":
		return bufferRedrive(args[1:], stdout, stderr)
	}
	sub := args[0]
	fs := flag.NewFlagSet("buffer "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { bufferUsage(stderr) }
	asJSON := fs.Bool("json", false, "inspect: print JSON")
	from := fs.Uint64("from", 0, "dump: first sequence to print (default: the oldest)")
	limit := fs.Int("limit", 0, "dump: most records to print; 0 prints all")
	if err := parseFlags(fs, args[1:]); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 {
		bufferUsage(stderr)
		return exitUsage
	}
	dir := fs.Arg(0)
	if sub != "inspect" && sub != "verify" && sub != "dump" {
		fmt.Fprintf(stderr, "buffer: unknown subcommand %q\n", sub)
		bufferUsage(stderr)
		return exitUsage
	}
	if err := checkLogDir(dir); err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	switch sub {
	case "inspect":
		return bufferInspect(dir, *asJSON, stdout, stderr)
	case "verify":
		return bufferVerify(dir, stdout, stderr)
	case "dump":
		return bufferDump(dir, *from, *limit, stdout, stderr)
	}
	fmt.Fprintf(stderr, "buffer: unknown subcommand %q\n", sub)
	bufferUsage(stderr)
	return exitUsage
}

func bufferInspect(dir string, asJSON bool, stdout, stderr io.Writer) int {
	rep, err := buffer.Inspect(dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(newInspectView(rep)); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "directory\t%s\n", rep.Dir)
	fmt.Fprintf(tw, "segments\t%d\n", len(rep.Segments))
	if rep.Records == 0 {
		// No range and no oldest record: there is none.
		fmt.Fprintf(tw, "records\t0 (the next is sequence %d)\n", max(rep.NextSeq, 1))
	} else {
		gaps := ""
		if rep.NextSeq > rep.FirstSeq && rep.Records != rep.NextSeq-rep.FirstSeq {
			gaps = ", less unused sequences"
		}
		fmt.Fprintf(tw, "records\t%d (sequences %d to %d%s)\n", rep.Records, rep.FirstSeq, rep.NextSeq-1, gaps)
	}
	fmt.Fprintf(tw, "bytes\t%d\n", rep.Bytes)
	if rep.Records > 0 && !rep.OldestRecord.IsZero() {
		fmt.Fprintf(tw, "oldest record\t%s (%s ago)\n", rep.OldestRecord.UTC().Format(time.RFC3339), time.Since(rep.OldestRecord).Round(time.Second))
	}
	switch r := rep.Reservation; {
	case r.State == "missing":
		fmt.Fprintf(tw, "sequence reservation\tnone\n")
	case r.Clean:
		fmt.Fprintf(tw, "sequence reservation\t%s: closed cleanly, next sequence %d\n", r.State, r.Limit)
	default:
		fmt.Fprintf(tw, "sequence reservation\t%s: sequences below %d may have been issued (open, or not closed cleanly)\n", r.State, r.Limit)
	}
	for _, c := range rep.Cursors {
		fmt.Fprintf(tw, "cursor %s\tacked %d, lag %d records\n", c.Name, c.Acked, c.Lag)
	}
	if len(rep.Missing) > 0 {
		fmt.Fprintf(tw, "missing segments\t%v\n", rep.Missing)
	}
	for _, d := range rep.Damaged {
		fmt.Fprintf(tw, "damaged\t%s\n", d)
	}
	tw.Flush()
	if len(rep.Segments) > 0 {
		fmt.Fprintln(stdout)
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "segment\tversion\tfirst seq\tunused before\tbytes\tcreated\t")
		for _, s := range rep.Segments {
			gap := "-"
			if s.Gap < s.First {
				gap = fmt.Sprintf("%d-%d", s.Gap, s.First-1)
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%s\t\n", s.Number, s.Version, s.First, gap, s.Bytes, s.Created.UTC().Format(time.RFC3339))
		}
		tw.Flush()
	}
	return exitOK
}

func bufferVerify(dir string, stdout, stderr io.Writer) int {
	rep, err := buffer.Verify(dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, p.String())
	}
	fmt.Fprintf(stdout, "%d segments, %d intact records, %d bytes, %d records lost, %d problems\n", rep.Segments, rep.Records, rep.Bytes, rep.Lost, len(rep.Problems))
	if !rep.OK() {
		return exitProblem
	}
	return exitOK
}

func bufferDump(dir string, from uint64, limit int, stdout, stderr io.Writer) int {
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	var line []byte
	var rec agent.Record
	err := buffer.Dump(dir, from, limit, func(r buffer.Record) error {
		line = append(line[:0], `{"_seq":`...)
		line = strconv.AppendUint(line, r.Seq, 10)
		rec = agent.Record{Fields: rec.Fields[:0]}
		if _, err := rec.UnmarshalMsg(r.Payload); err != nil {
			line = append(line, `,"_undecodable":true,"_payload_len":`...)
			line = strconv.AppendInt(line, int64(len(r.Payload)), 10)
			line = append(line, '}')
		} else {
			body := agent.AppendJSON(nil, &rec)
			if len(body) > 2 {
				line = append(line, ',')
				line = append(line, body[1:]...)
			} else {
				line = append(line, '}')
			}
		}
		line = append(line, '\n')
		_, err := w.Write(line)
		return err
	})
	if err != nil {
		w.Flush()
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	return exitOK
}

// bufferDrop deletes DATA_DIR/pipelines/NAME: what a removed pipeline left
// undelivered. It takes the agent's data directory lock, so it never runs
// under an agent.
func bufferDrop(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buffer drop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { bufferUsage(stderr) }
	cfgPath := fs.String("c", "", "agent config file, for its data_dir")
	dataDir := fs.String("data-dir", "", "data directory (overrides the agent file)")
	yes := fs.Bool("yes", false, "confirm: the records are deleted for good")
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 {
		bufferUsage(stderr)
		return exitUsage
	}
	name := fs.Arg(0)
	cfg, code := loadForPipeline("buffer drop", name, *cfgPath, *dataDir, "", stderr)
	if code != exitOK {
		return code
	}
	dir := filepath.Join(cfg.DataDir, "pipelines", name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "buffer drop: no data for pipeline %q in %s\n", name, filepath.Join(cfg.DataDir, "pipelines"))
		return exitProblem
	}
	unlock, err := lockDataDir(cfg.DataDir, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintf(stderr, "buffer drop: refused while an agent runs: %v\n", err)
		return exitProblem
	}
	defer unlock()
	var records uint64
	if rep, err := buffer.Inspect(filepath.Join(dir, "log")); err == nil {
		for _, c := range rep.Cursors {
			records = max(records, c.Lag)
		}
	}
	if !*yes {
		fmt.Fprintf(stderr, "buffer drop: would delete %s (%d undelivered records); run again with --yes to delete it for good\n", dir, records)
		return exitProblem
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(stderr, "buffer drop: %v\n", err)
		return exitFailure
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		// Deleted, but a power cut now could bring the directory back.
		fmt.Fprintf(stderr, "buffer drop: %v\n", err)
	}
	fmt.Fprintf(stdout, "dropped %s (%d undelivered records)\n", dir, records)
	return exitOK
}

// loadForPipeline checks name, the pipeline argument of a buffer command
// (cmd) that works on one pipeline's data: a file name, not hidden. Then
// it loads the agent file cfgPath with the overrides of the data directory
// and pipelines directory flags (empty: none). A problem is said on stderr,
// and the exit code returned is not exitOK.
func loadForPipeline(cmd, name, cfgPath, dataDir, pipesDir string, stderr io.Writer) (runner.AgentConfig, int) {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		fmt.Fprintf(stderr, "%s: %q is not a pipeline name\n", cmd, name)
		return runner.AgentConfig{}, exitUsage
	}
	cfg, err := runner.LoadAgentConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return cfg, exitProblem
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	if pipesDir != "" {
		cfg.PipelinesDir = pipesDir
	}
	return cfg, exitOK
}
