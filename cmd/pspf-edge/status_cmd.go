package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/agent/supervisor"
)

// cmdStatus prints the running agent's pipelines from its admin API.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "agent config file, for its admin address")
	addr := fs.String("admin", "", "admin address of the agent (default: the one the running agent published, see below)")
	asJSON := fs.Bool("json", false, "print the API's JSON as it is")
	tokenFile := fs.String("token-file", "", "file holding the admin API's bearer token (default: admin.token of the agent file given with -c)")
	caFile := fs.String("ca-file", "", "PEM CAs to verify an https admin API with (default: with -c, the agent's own admin.tls.cert_file, pinned)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the agent")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pspf-edge status [--admin ADDR] [-c agent.yaml] [--token-file FILE] [--ca-file FILE] [--json]\n\nShows every pipeline of the running agent: generation, state, backlog, drops, sinks.\n\nWithout --admin it finds the agent by the address the agent publishes when it\nstarts (also for --admin 127.0.0.1:0): with -c, in that file's data_dir;\nwithout, among the agents this user started and the one on "+runner.DefaultAgentConfig().DataDir+",\nelse at "+runner.DefaultAgentConfig().Admin.Address+".\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := runner.DefaultAgentConfig()
	if *addr == "" || *cfgPath != "" {
		var err error
		if cfg, err = runner.LoadAgentConfig(*cfgPath); err != nil {
			fmt.Fprintln(stderr, err)
			return exitProblem
		}
	}
	if *addr == "" {
		var err error
		// The address the running agent published (adminaddr.go).
		if *addr, err = discoverAdmin(ctx, *cfgPath, cfg.DataDir, cfg.Admin.Address); err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
	}
	token := cfg.Admin.Token
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "status: token: %v\n", err)
			return exitUsage
		}
		token = strings.TrimRight(string(b), "\r\n") // as ${file:} reads it
	}
	pin := ""
	if *caFile == "" {
		pin = cfg.Admin.TLS.CertFile
	}
	client, err := newAdminClient(token, *caFile, pin)
	if err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return exitUsage
	}
	if *addr == "" {
		fmt.Fprintln(stderr, "status: the admin API is disabled (admin.address is empty)")
		return exitProblem
	}
	body, err := fetchStatus(ctx, client, *addr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	if *asJSON {
		stdout.Write(body)
		return exitOK
	}
	var resp struct {
		Pipelines []supervisor.PipelineView `json:"pipelines"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		fmt.Fprintf(stderr, "status: decode the agent's answer: %v\n", err)
		return exitFailure
	}
	printStatus(stdout, resp.Pipelines)
	for _, p := range resp.Pipelines {
		if p.State == supervisor.StateFailed || p.State == supervisor.StateRestarting || p.LastReloadError != "" {
			return exitProblem
		}
	}
	return exitOK
}

func fetchStatus(ctx context.Context, client *adminClient, addr string) ([]byte, error) {
	resp, err := client.get(ctx, addr, "/api/v1/pipelines")
	if err != nil {
		return nil, fmt.Errorf("status: is the agent running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("status: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// printStatus writes one row per pipeline, one per sink under it, and the
// reload errors at the end.
func printStatus(w io.Writer, ps []supervisor.PipelineView) {
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tGEN\tSTATE\tIN\tBACKLOG\tOLDEST\tTO CAP\tDROPS\tDEAD\tLAST ERROR")
	for _, p := range ps {
		var in uint64
		for _, s := range p.Sources {
			in += s.Records
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d (%s)\t%s\t%s\t%s\t%d\t%s\n", p.Name, p.Generation, p.State, in,
			p.BacklogRecords, humanBytes(p.BacklogBytes), humanSeconds(p.OldestUnsentSeconds, p.BacklogRecords > 0),
			toCap(p, now), drops(p.Drops), p.DeadLetters, cut(p.LastError, 60))
		for _, s := range p.Sinks {
			state := "online"
			if !s.Online {
				state = "offline"
				if s.OfflineSeconds > 0 {
					state += " " + humanSeconds(s.OfflineSeconds, true)
				}
			}
			fmt.Fprintf(tw, "  sink %s\t\t%s\t%d\t%d\t\t\tretries %d\t%d\t%s\n", s.Name, state, s.Records, s.Backlog, s.Retries, s.Rejected, cut(s.LastError, 60))
		}
		if g := p.Partitions; g != nil {
			fmt.Fprintf(tw, "  group %s\tgen %d\t%d partitions\tlag %d\t%s\n", g.Group, g.Generation, len(g.Owned), g.Lag, cut(ownedList(g.Owned), 60))
			for _, r := range g.Restoring {
				fmt.Fprintf(tw, "  restoring %s[%d]\t\t%s\t\t\t\t\t\t\t\n", r.Topic, r.Partition, restoreProgress(r))
			}
		}
	}
	tw.Flush()
	for _, p := range ps {
		if p.LastReloadError != "" {
			fmt.Fprintf(w, "\n%s: the last change was not applied (generation %d keeps running):\n  %s\n", p.Name, p.Generation, strings.ReplaceAll(p.LastReloadError, "\n", "\n  "))
		}
	}
}

func drops(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, k+"="+strconv.FormatUint(m[k], 10))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ",")
}

// toCap is the TO CAP column: the time until the log is full, or, while
// it is, for how long and why: "blocked 31s disk_full" (appends wait),
// "full 5m0s max_bytes" (the policy drops).
func toCap(p supervisor.PipelineView, now time.Time) string {
	if !p.BlockedSince.IsZero() {
		return "blocked " + humanSeconds(now.Sub(p.BlockedSince).Seconds(), true) + " " + p.BlockedReason
	}
	for _, ls := range []*runner.LogStatus{p.Input, &p.Log} {
		if ls != nil && !ls.FullSince.IsZero() {
			return "full " + humanSeconds(now.Sub(ls.FullSince).Seconds(), true) + " " + ls.FullReason
		}
	}
	if p.SecondsToCap == nil {
		return "-"
	}
	return humanSeconds(*p.SecondsToCap, true)
}

func humanSeconds(s float64, show bool) string {
	if !show {
		return "-"
	}
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < 48*time.Hour:
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%.1fd", d.Hours()/24)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// ownedList is a group's partitions with their lags: "tele[0]=12 tele[3]=0".
func ownedList(ps []runner.OwnedPartition) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s[%d]=%d", p.Topic, p.Partition, p.Lag)
	}
	return b.String()
}

// restoreProgress is a restore's progress line: "1200/5000 changelog
// offsets, 830 records, 3s".
func restoreProgress(r runner.RestoreStatus) string {
	end := "?"
	if r.End >= 0 {
		end = strconv.FormatInt(r.End, 10)
	}
	return fmt.Sprintf("%d/%s changelog offsets, %d records, %s", r.At, end, r.Records, humanSeconds(time.Since(r.Since).Seconds(), true))
}
