// Command kfake-broker runs franz-go's in-process Kafka-protocol cluster
// (kfake) on a loopback port until SIGTERM or SIGINT, for shell-level tests
// with kcat and the agent. It prints the broker address (host:port) as the
// first line on stdout once it accepts connections. It is a test tool, not
// part of the shipped binary.
//
//	go run ./internal/kafkatest/cmd/kfake-broker -port 9092 -topics telemetry:3
//	kcat -b 127.0.0.1:9092 -C -t telemetry -e -f '%h %s\n'
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kfake-broker:", err)
		os.Exit(1)
	}
}

func run() error {
	port := flag.Int("port", 0, "port on 127.0.0.1; 0 picks a free one")
	topics := flag.String("topics", "", "topics to create, comma-separated name[:partitions]")
	autoCreate := flag.Bool("auto-create", true, "let producers create missing topics")
	dataDir := flag.String("data-dir", "", "persist the cluster's data here (survives restarts); empty keeps it in memory")
	flag.Parse()

	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(*port), kfake.DefaultNumPartitions(1)}
	if *autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		name, parts, _ := strings.Cut(t, ":")
		n := int64(1)
		if parts != "" {
			var err error
			if n, err = strconv.ParseInt(parts, 10, 32); err != nil || n < 1 {
				return fmt.Errorf("topic %q: partitions must be a positive number", t)
			}
		}
		opts = append(opts, kfake.SeedTopics(int32(n), name))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		return fmt.Errorf("start: no listener")
	}
	fmt.Println(addrs[0])
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
