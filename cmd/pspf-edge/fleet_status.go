package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/sinks/kafka"
	mqttsink "github.com/pspf/pspf-edge/sinks/mqtt"
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
	var beats []fleet.Heartbeat
	switch c := spec.Config.(type) {
	case *mqttsink.Config:
		beats, err = mqttBeats(ctx, c, *wait)
	case *kafka.Config:
		beats, err = kafkaBeats(ctx, c, *wait)
	default:
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
	slices.SortFunc(out, func(a, b fleet.Heartbeat) int { return strings.Compare(a.Agent, b.Agent) })
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

var templateField = regexp.MustCompile(`\{[^}]*\}`)

// mqttBeats reads the retained heartbeats (and those that come within
// wait) of the sink's topic, its template fields made wildcards.
func mqttBeats(ctx context.Context, c *mqttsink.Config, wait time.Duration) ([]fleet.Heartbeat, error) {
	o := paho.NewClientOptions().AddBroker(c.Broker).SetUsername(c.Username).SetPassword(c.Password).
		SetClientID(fmt.Sprintf("pspf-fleet-status-%d", time.Now().UnixNano())).SetCleanSession(true)
	if on, err := c.TLS.On(strings.SplitN(c.Broker, ":", 2)[0]); err == nil && on {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	cl := paho.NewClient(o)
	if err := waitTok(ctx, cl.Connect()); err != nil {
		return nil, fmt.Errorf("mqtt connect %s: %w", agent.RedactURL(c.Broker), err)
	}
	defer cl.Disconnect(100)
	var mu sync.Mutex
	var out []fleet.Heartbeat
	filter := templateField.ReplaceAllString(c.Topic, "+")
	if err := waitTok(ctx, cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		var hb fleet.Heartbeat
		if json.Unmarshal(m.Payload(), &hb) == nil && hb.Agent != "" {
			mu.Lock()
			out = append(out, hb)
			mu.Unlock()
		}
	})); err != nil {
		return nil, fmt.Errorf("mqtt subscribe %s: %w", filter, err)
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(out), nil
}

func waitTok(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// kafkaBeats reads the sink's topic from its start until it has been quiet
// for wait.
func kafkaBeats(ctx context.Context, c *kafka.Config, wait time.Duration) ([]fleet.Heartbeat, error) {
	if strings.Contains(c.Topic, "{") {
		return nil, fmt.Errorf("kafka topic %q is a template: fleet status reads one topic", c.Topic)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(c.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
	if on, err := c.TLS.On(""); err == nil && on {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	defer cl.Close()
	var out []fleet.Heartbeat
	for {
		pctx, cancel := context.WithTimeout(ctx, wait)
		fs := cl.PollFetches(pctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			var hb fleet.Heartbeat
			if json.Unmarshal(r.Value, &hb) == nil && hb.Agent != "" {
				out = append(out, hb)
			}
		})
		if n == 0 || ctx.Err() != nil {
			return out, nil
		}
	}
}
