package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/fleet"
)

// fleetStatus prints every agent's latest heartbeat, read from where the
// agent file's fleet.heartbeat.sink sends them: the retained messages of
// an MQTT topic, or a Kafka topic from its start.
func fleetStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fleetUsage(stderr) }
	cfgPath := fs.String("c", "", "agent file whose fleet.heartbeat.sink says where heartbeats go")
	asJSON := fs.Bool("json", false, "print the heartbeats as JSON, with last_seen")
	wait := fs.Duration("wait", 3*time.Second, "how long to collect heartbeats (MQTT: after the retained ones; Kafka: quiet time at the end)")
	if err := parseFlags(fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 0 || *cfgPath == "" {
		fleetUsage(stderr)
		return exitUsage
	}
	cfg, err := loadAgentConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitProblem
	}
	fc, _ := fleetConfig(cfg)
	spec, _ := heartbeatSink(fc, newRegistry())
	if spec == nil {
		fmt.Fprintf(stderr, "fleet status: %s has no fleet.heartbeat.sink\n", *cfgPath)
		return exitProblem
	}
	secrets := new(agent.Secrets)
	secrets.Add(agent.SecretValues(spec.Config)...)
	ctx, cancel := context.WithTimeout(context.Background(), *wait+30*time.Second)
	defer cancel()
	// Each reader is in the binary with its connector (fleet_status_mqtt.go,
	// fleet_status_kafka.go): it reads the heartbeats if the sink is its own.
	beats, ok, err := mqttBeats(ctx, spec.Config, *wait)
	if !ok {
		beats, ok, err = kafkaBeats(ctx, spec.Config, *wait)
	}
	if !ok {
		err = fmt.Errorf("heartbeats sent with a %s sink cannot be read back; fleet status reads mqtt and kafka", spec.Type)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleet status: %s\n", secrets.Text(err.Error()))
		return exitFailure
	}
	beats = latestBeats(beats)
	if *asJSON {
		type row struct {
			LastSeenSeconds float64 `json:"last_seen_s"`
			fleet.Heartbeat
		}
		out := []row{}
		for _, b := range beats {
			out = append(out, row{time.Since(b.SentAt).Round(time.Second).Seconds(), b})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out) //nolint:errcheck // stdout
		return exitOK
	}
	printBeats(stdout, beats, time.Now())
	return exitOK
}

// latestBeats keeps each agent's latest heartbeat, in name order.
func latestBeats(all []fleet.Heartbeat) []fleet.Heartbeat {
	by := map[string]fleet.Heartbeat{}
	for _, b := range all {
		if o, ok := by[b.Agent]; !ok || b.SentAt.After(o.SentAt) {
			by[b.Agent] = b
		}
	}
	out := make([]fleet.Heartbeat, 0, len(by))
	for _, b := range by {
		out = append(out, b)
	}
	// sort.Slice, not slices.SortFunc: a generic sort of a struct this
	// large is 23 KB of code of its own; sort.Slice's is shared.
	sort.Slice(out, func(i, j int) bool { return out[i].Agent < out[j].Agent })
	return out
}

func printBeats(w io.Writer, beats []fleet.Heartbeat, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tLAST SEEN\tVERSION\tBUNDLE\tPIPELINES\tBACKLOG\tOFFLINE\tPROBLEMS")
	for _, b := range beats {
		running, backlog := 0, uint64(0)
		var offline time.Duration
		var problems []string
		for _, p := range b.Pipelines {
			if p.State == "running" {
				running++
			}
			backlog += p.BacklogRecords
			if !p.OfflineSince.IsZero() {
				offline = max(offline, now.Sub(p.OfflineSince))
			}
			if p.LastError != "" {
				problems = append(problems, p.Name+": "+p.LastError)
			}
		}
		bundle := strconv.FormatUint(b.Status.Version, 10)
		if b.OnTrial {
			bundle += " (on trial)"
		}
		if b.RolledBack != 0 {
			problems = append([]string{fmt.Sprintf("rolled back from %d: %s", b.RolledBack, b.RolledBackReason)}, problems...)
		} else if b.RolledBackReason != "" {
			problems = append([]string{b.RolledBackReason}, problems...)
		}
		if r := b.LastRefused; r != nil {
			problems = append(problems, fmt.Sprintf("refused %d (%s)", r.Version, r.Reason))
		}
		off := "-"
		if offline > 0 {
			off = offline.Round(time.Second).String()
		}
		prob := strings.Join(problems, "; ")
		if len(prob) > 100 {
			prob = prob[:97] + "..."
		}
		if prob == "" {
			prob = "-"
		}
		fmt.Fprintf(tw, "%s\t%s ago\t%s\t%s\t%d/%d running\t%d\t%s\t%s\n", b.Agent, now.Sub(b.SentAt).Round(time.Second),
			b.AgentVersion, bundle, running, len(b.Pipelines), backlog, off, prob)
	}
	tw.Flush()
}
