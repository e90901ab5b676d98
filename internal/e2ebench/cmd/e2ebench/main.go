// Command e2ebench is the end-to-end benchmark (`make bench-e2e`): MQTT in,
// agent, Kafka out, through real brokers (mosquitto and kfake-broker)
// started on free loopback ports. It prints a table and writes
// results.json, table.txt and outage.svg to -out. With -flood it runs the
// memory benchmark of large payloads instead (make bench-flood): bursts of
// 250 KB messages with Kafka up and down, the agent's peak RSS and heap,
// and what it gives back after each burst; it writes flood.json. A
// development tool, not part of the shipped binary.
//
//	go run ./internal/e2ebench/cmd/e2ebench -out bench-results
//	go run ./internal/e2ebench/cmd/e2ebench -flood -out bench-results
//	go run ./internal/e2ebench/cmd/e2ebench -agent 'other=/opt/other/agent --conf /etc/other/{kind}.toml --mqtt {mqtt} --kafka {kafka}'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pspf/pspf-edge/internal/e2ebench"
)

type agentsFlag []e2ebench.AgentSpec

func (a *agentsFlag) String() string { return fmt.Sprint(*a) }

func (a *agentsFlag) Set(v string) error {
	name, cmd, ok := strings.Cut(v, "=")
	if !ok || strings.ContainsAny(name, " /{") || name == "" {
		f := strings.Fields(v)
		if len(f) == 0 {
			return fmt.Errorf("empty agent command")
		}
		name, cmd = filepath.Base(f[0]), v
	}
	*a = append(*a, e2ebench.AgentSpec{Name: name, Cmd: cmd})
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	cfg := e2ebench.DefaultConfig()
	var agents agentsFlag
	flag.Var(&agents, "agent", "agent under test, NAME=COMMAND or COMMAND; repeatable (default: pspf-edge=\""+e2ebench.DefaultAgentCmd+"\"). Placeholders: {pipeline} {kind} {mqtt} {mqtt_addr} {mqtt_tls} {mqtt_ca} {kafka} {topic} {data} {admin} {dir}")
	flag.Var(&agents, "agent-cmd", "same as -agent")
	flag.StringVar(&cfg.OutDir, "out", cfg.OutDir, "directory for results.json, table.txt, outage.svg and work files")
	flag.StringVar(&cfg.PipelinesDir, "pipelines", cfg.PipelinesDir, "directory with passthrough.yaml and window.yaml")
	flag.StringVar(&cfg.KafkaBroker, "kafka-broker", cfg.KafkaBroker, "kfake-broker executable")
	flag.IntVar(&cfg.Repeats, "repeats", cfg.Repeats, "runs of each load")
	flag.Uint64Var(&cfg.MaxQoS0, "qos0", cfg.MaxQoS0, "messages of a max-rate QoS 0 run")
	flag.Uint64Var(&cfg.MaxQoS1, "qos1", cfg.MaxQoS1, "messages of a max-rate QoS 1 run")
	rates := flag.String("rates", joinRates(cfg.Rates), "fixed QoS 1 rates, msg/s, comma-separated (empty: none)")
	flag.DurationVar(&cfg.RateDuration, "rate-duration", cfg.RateDuration, "length of a fixed-rate run")
	flag.Uint64Var(&cfg.WindowMessages, "window", cfg.WindowMessages, "messages of a window-pipeline run (0: no window session)")
	flag.IntVar(&cfg.Conns, "conns", cfg.Conns, "publishing connections")
	flag.IntVar(&cfg.MosquittoInflight, "mosquitto-inflight", 1000, "mosquitto's max_inflight_messages (its own default: 20; an MQTT 5 client sets its own Receive Maximum)")
	flag.BoolVar(&cfg.MQTTTLS, "mqtt-tls", false, "give mosquitto a TLS listener too (a throw-away CA): the agent's pipeline can subscribe over TLS with brokers [\"${PSPF_BENCH_MQTT_TLS}\"] and tls: {ca_file: \"${PSPF_BENCH_MQTT_CA}\"}; publishers stay on plain TCP")
	flag.IntVar(&cfg.Sensors, "sensors", cfg.Sensors, "sensors (topics)")
	flag.IntVar(&cfg.Size, "size", cfg.Size, "payload bytes")
	flag.Float64Var(&cfg.Mix.Filtered, "filtered", cfg.Mix.Filtered, "share of readings the filter drops")
	flag.Float64Var(&cfg.Mix.Invalid, "invalid", cfg.Mix.Invalid, "share of payloads that are not JSON")
	flag.DurationVar(&cfg.IdleWait, "idle-wait", cfg.IdleWait, "agent age at which idle memory is read")
	flag.DurationVar(&cfg.Pause, "pause", cfg.Pause, "quiet time between runs")
	flag.Float64Var(&cfg.Outage.Rate, "outage-rate", cfg.Outage.Rate, "msg/s of the outage run")
	flag.DurationVar(&cfg.Outage.Duration, "outage", cfg.Outage.Duration, "length of the outage run (0: none)")
	flag.DurationVar(&cfg.Outage.Start, "outage-start", cfg.Outage.Start, "when the Kafka broker stops")
	flag.DurationVar(&cfg.Outage.Down, "outage-down", cfg.Outage.Down, "how long it stays down")
	flag.DurationVar(&cfg.LowRate.Duration, "lowrate-duration", cfg.LowRate.Duration, "length of a fixed-rate run of the low-rate table (0: no low-rate table)")
	flag.Uint64Var(&cfg.LowRate.MaxMessages, "lowrate-max", cfg.LowRate.MaxMessages, "messages of a max-rate run of the low-rate table")
	flag.DurationVar(&cfg.LowRate.Idle, "lowrate-idle", cfg.LowRate.Idle, "how long the idle agent is watched")
	flag.StringVar(&cfg.LowRate.FSKBytes, "lowrate-fs-kbytes", "", "a file system's written-kB counter (/sys/fs/ext4/DEV/lifetime_write_kbytes) also read around each low-rate run: all it wrote, journal included (put only the agent's --data-dir on it; scripts/flash-wear.sh)")
	lrRates := flag.String("lowrate-rates", joinRates(cfg.LowRate.Rates), "rates of the low-rate table, msg/s, comma-separated (0: max)")
	lrQoS := flag.String("lowrate-qos", "0,1", "QoS levels of the low-rate table")
	lrConns := flag.String("lowrate-conns", "1,4", "publishing connections of the low-rate table")
	docs := flag.String("docs", "", "also copy results.json and outage.svg here (the committed example)")
	flood := flag.Bool("flood", false, "run the flood (memory) benchmark instead: -flood-messages of -flood-size bytes, Kafka up, down, mixed")
	fcfg := e2ebench.DefaultFloodConfig()
	flag.Uint64Var(&fcfg.Messages, "flood-messages", fcfg.Messages, "messages of one flood")
	flag.IntVar(&fcfg.Size, "flood-size", fcfg.Size, "payload bytes of the flood's messages")
	flag.Parse()
	if len(agents) > 0 {
		cfg.Agents = agents
	}
	cfg.Rates = nil
	for _, r := range strings.Split(*rates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "e2ebench: -rates: %q is not a positive number\n", r)
			return 2
		}
		cfg.Rates = append(cfg.Rates, v)
	}
	var err error
	if cfg.LowRate.Rates, err = parseNums(*lrRates, func(v float64) float64 { return v }); err == nil {
		if cfg.LowRate.QoS, err = parseNums(*lrQoS, func(v float64) int { return int(v) }); err == nil {
			cfg.LowRate.Conns, err = parseNums(*lrConns, func(v float64) int { return int(v) })
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2ebench: %v\n", err)
		return 2
	}
	cfg.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if *flood {
		fcfg.Agent = cfg.Agents[0]
		fcfg.PipelinesDir, fcfg.KafkaBroker, fcfg.Log = cfg.PipelinesDir, cfg.KafkaBroker, os.Stderr
		fcfg.Dir = filepath.Join(cfg.OutDir, "flood")
		os.RemoveAll(fcfg.Dir)
		return runFlood(ctx, fcfg, cfg.OutDir, start)
	}
	res, err := e2ebench.Run(ctx, cfg)
	fmt.Println()
	e2ebench.WriteTable(os.Stdout, res)
	e2ebench.WriteTargets(os.Stdout, res)
	if werr := e2ebench.WriteFiles(cfg.OutDir, res); werr != nil {
		fmt.Fprintln(os.Stderr, werr)
		return 1
	}
	if *docs != "" {
		if werr := e2ebench.WriteFiles(*docs, res); werr != nil {
			fmt.Fprintln(os.Stderr, werr)
			return 1
		}
		os.Remove(filepath.Join(*docs, "table.txt"))
	}
	fmt.Printf("\nresults in %s (results.json, table.txt, outage.svg); took %s\n", cfg.OutDir, time.Since(start).Round(time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runFlood(ctx context.Context, cfg e2ebench.FloodConfig, out string, start time.Time) int {
	res, err := e2ebench.Flood(ctx, cfg)
	fmt.Println()
	e2ebench.WriteFloodTable(os.Stdout, res)
	if werr := e2ebench.WriteFloodFile(filepath.Join(out, "flood.json"), res); werr != nil {
		fmt.Fprintln(os.Stderr, werr)
		return 1
	}
	fmt.Printf("\nresults in %s (flood.json); took %s\n", out, time.Since(start).Round(time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func joinRates(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}

// parseNums parses a comma-separated list of non-negative numbers.
func parseNums[T any](s string, conv func(float64) T) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q is not a non-negative number", f)
		}
		out = append(out, conv(v))
	}
	return out, nil
}
