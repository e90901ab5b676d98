package kafka

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/operators/decode"
	"github.com/pspf/pspf-edge/sinks/file"
)

// BenchmarkKafkaToFile measures the agent draining a backlog of b.N
// records (JSON values of about 100 bytes, 6 partitions) from a Kafka
// broker into a file: the Kafka source, the pipeline log (group commit,
// fsync), the file sink (fsync per batch), on one core (GOMAXPROCS 1).
// The broker (kfake) runs as a process of its own, so that the agent's
// core is its own; the records are produced before the clock starts:
//
//	go test -run '^$' -bench KafkaToFile -benchtime 500000x ./sources/kafka
//
// raw: the value as the record's payload, no fields (the file gets _raw);
// fields: kafka.* metadata and headers as fields and a json decode, the
// file gets every field. Values uncompressed (none) or lz4. The file sink
// takes batches of up to 20000 records (8 MiB): with its default of 500
// (sink-default) each batch waits for its own fsync, and that fsync, not
// the source, sets the rate. It reports records/s of wall time, the
// agent's CPU time per record (user and system, the whole process) and
// its inverse, the records one core carries per second of CPU (the figure
// that holds on a machine other work shares), and the rate of a bare
// franz-go consumer draining the same topic (the broker's ceiling).
func BenchmarkKafkaToFile(b *testing.B) {
	addr := startBroker(b)
	const big = "\n    batch: {max_records: 20000, max_bytes: 8MiB}"
	runs := 0 // each run a topic of its own: -count repeats them on this broker
	for _, bc := range []struct {
		name   string
		fields bool
		codec  string
		sink   string
	}{
		{"raw/none/sink-default", false, "none", ""},
		{"raw/none", false, "none", big},
		{"raw/lz4", false, "lz4", big},
		{"fields/none", true, "none", big},
		{"fields/lz4", true, "lz4", big},
	} {
		b.Run(bc.name, func(b *testing.B) {
			runs++
			topic := strings.ReplaceAll(bc.name, "/", "-") + "-" + strconv.Itoa(b.N) + "-" + strconv.Itoa(runs)
			produceBacklog(b, addr, topic, bc.codec, b.N)
			base := bareConsumer(b, addr, topic, b.N)
			rate, cpu := drain(b, addr, topic, bc.fields, bc.sink, b.N)
			b.ReportMetric(base, "bare_records/s")
			b.ReportMetric(rate, "records/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e3, "cpu_us/record")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu_s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// startBroker builds and starts internal/kafkatest/cmd/kfake-broker on a
// free port, and returns its address; it is stopped in b.Cleanup.
func startBroker(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "kfake-broker")
	if out, err := exec.Command("go", "build", "-o", bin, "../../internal/kafkatest/cmd/kfake-broker").CombinedOutput(); err != nil {
		b.Fatalf("build kfake-broker: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-port", "0", "-auto-create=false")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start kfake-broker: %v", err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("kfake-broker address: %v", err)
	}
	return strings.TrimSpace(line)
}

// produceBacklog creates topic with 6 partitions and produces n records to
// it, keyed over 64 keys, with one header each.
func produceBacklog(b *testing.B, addr, topic, codec string, n int) {
	b.Helper()
	comp := kgo.NoCompression()
	if codec == "lz4" {
		comp = kgo.Lz4Compression()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(comp),
		kgo.AllowAutoTopicCreation(), kgo.DisableClientMetrics(), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := createTopic(ctx, cl, topic, 6); err != nil {
		b.Fatal(err)
	}
	errs := make(chan error, 1)
	for i := range n {
		v := fmt.Sprintf(`{"sensor":"s-%02d","seq":%d,"temp":21.5,"hum":40.25,"site":"plant-7","status":"ok","ts":1700000000000}`, i%64, i)
		cl.Produce(ctx, &kgo.Record{Key: []byte("s-" + strconv.Itoa(i%64)), Value: []byte(v),
			Headers: []kgo.RecordHeader{{Key: "source", Value: []byte("bench")}}}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-errs:
		b.Fatalf("produce: %v", err)
	default:
	}
}

// drain runs the pipeline until the file sink has every record, and
// returns the records per second and the process's CPU time meanwhile.
func drain(b *testing.B, addr, topic string, fields bool, sinkOpts string, n int) (float64, time.Duration) {
	b.Helper()
	dir := b.TempDir()
	reg := runner.NewRegistry()
	reg.Sources["kafka"] = Factory()
	reg.Operators["decode"] = decode.Factory()
	reg.Sinks["file"] = file.Factory()
	ops := ""
	src := fmt.Sprintf("{brokers: [%s], topics: [%s], group: %s", addr, topic, topic)
	if fields {
		ops = "operators:\n  - decode: {format: json}\n"
		src += "}"
	} else {
		src += ", metadata: false, headers: false}"
	}
	text := "sources:\n  - kafka: " + src + "\n" + ops + "sinks:\n  - file: {path: " + filepath.Join(dir, "out.ndjson") + ", max_bytes: 1GiB}" + sinkOpts + "\n"
	spec, err := reg.ParsePipeline("bench.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	p, err := runner.NewPipeline(spec, runner.PipelineDeps{Registry: reg, Logger: logger, DataDir: filepath.Join(dir, "data"),
		AgentName: "bench", OpenLog: runner.OpenDiskLog(logger), ShutdownTimeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	go func() { done <- p.Run(ctx) }()
	deadline := start.Add(10 * time.Minute)
	for p.Status().Sinks[0].Records < uint64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("the file got %d of %d records in 10 minutes", p.Status().Sinks[0].Records, n)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatalf("run: %v", err)
	}
	return float64(n) / elapsed.Seconds(), cpu
}

// bareConsumer drains the topic with a bare franz-go consumer (no group,
// nothing done with the records) on one core: the ceiling the broker and
// the client set.
func bareConsumer(b *testing.B, addr, topic string, n int) float64 {
	b.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	start := time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.DisableClientMetrics(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(1<<20), kgo.MaxConcurrentFetches(2))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	got := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for got < n && ctx.Err() == nil {
		got += cl.PollFetches(ctx).NumRecords()
	}
	return float64(n) / time.Since(start).Seconds()
}

// processCPU returns the user and system time of the whole process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// createTopic creates a topic of the given partitions.
func createTopic(ctx context.Context, cl *kgo.Client, topic string, partitions int32) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, 1
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	return nil
}
