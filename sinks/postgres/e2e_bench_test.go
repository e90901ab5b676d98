package postgres

import (
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/e2ebench"
	"github.com/pspf/pspf-edge/internal/pgtest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// BenchmarkMQTTToPostgres runs the agent (built like `make build`, a
// process of its own) on pipelines/bench/mqtt-to-postgres.yaml between a
// mosquitto and a PostgreSQL server with fsync on, all on loopback, and
// publishes 200,000 JSON readings at QoS 1 as fast as the broker takes
// them. It reports the rows per second into the table (from the first
// message published to the last row committed), the agent's CPU time per
// row (user + system, from /proc), and checks by payload (seq) that every
// reading is in the table once.
//
//	go test -run '^$' -bench MQTTToPostgres -benchtime 1x ./sinks/postgres/
func BenchmarkMQTTToPostgres(b *testing.B) {
	const n = 200_000
	dir := b.TempDir()
	bin := filepath.Join(dir, "pspf-edge")
	build := osexec.Command("go", "build", "-o", bin, "../../cmd/pspf-edge")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	mq := testbroker.Start(b, testbroker.Options{})
	srv := pgtest.Start(b, pgtest.Options{Fsync: true})
	url := srv.URL("", "sslmode=disable")
	c := db(b, url)
	ctx := context.Background()
	pipeline, err := filepath.Abs("../../pipelines/bench/mqtt-to-postgres.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if i > 0 {
			exec(b, c, "DROP TABLE readings")
		}
		agent := osexec.Command(bin, "run", "-p", pipeline, "--data-dir", filepath.Join(dir, "data"+strconv.Itoa(i)), "--admin", "127.0.0.1:0", "--log-level", "warn")
		agent.Env = append(os.Environ(), "PSPF_BENCH_MQTT="+mq.URL(), "PSPF_BENCH_PG="+url)
		agent.Stderr = os.Stderr
		agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := agent.Start(); err != nil {
			b.Fatal(err)
		}
		rows := func() int64 {
			var k int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&k); err != nil {
				return -1
			}
			return k
		}
		// Up once it has created the table and subscribed: a warm-up
		// reading comes through.
		deadline := time.Now().Add(30 * time.Second)
		for rows() < 1 {
			if err := e2ebench.PublishOne(ctx, mq.URL()[len("tcp://"):], "warm", "sensors/warm/temp", []byte(`{"seq":-1,"ts":1700000000000,"temp":1}`)); err != nil {
				b.Fatal(err)
			}
			if time.Now().After(deadline) {
				b.Fatal("the agent did not write the warm-up reading")
			}
			// The warm-up publisher's pace: few readings in flight, so
			// that none lands after the DELETE below.
			time.Sleep(200 * time.Millisecond)
		}
		exec(b, c, "DELETE FROM readings")
		before, err := e2ebench.ReadProc(agent.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		load := e2ebench.NewLoad(e2ebench.LoadConfig{Addr: mq.URL()[len("tcp://"):], QoS: 1, Messages: n, Conns: 2, Sensors: 50, Size: 100})
		b.ResetTimer()
		start := time.Now()
		pubErr := make(chan error, 1)
		go func() { pubErr <- load.Run(ctx, "bench"+strconv.Itoa(i)) }()
		if !wait.Until(5*time.Minute, func() bool { return rows() >= n }) {
			b.Fatalf("got %d rows after 5 minutes, want %d", rows(), n)
		}
		took := time.Since(start)
		b.StopTimer()
		after, err := e2ebench.ReadProc(agent.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		if err := <-pubErr; err != nil {
			b.Fatal(err)
		}
		_ = agent.Process.Signal(syscall.SIGTERM)
		_ = agent.Wait()
		var distinct, total, outside int64
		if err := c.QueryRow(ctx, "SELECT count(DISTINCT seq), count(*), count(*) FILTER (WHERE seq < 0 OR seq >= $1) FROM readings", n).Scan(&distinct, &total, &outside); err != nil {
			b.Fatal(err)
		}
		if distinct != n || total != n || outside != 0 {
			b.Fatalf("got %d distinct readings in %d rows (%d outside the run); want %d once each", distinct, total, outside, n)
		}
		b.ReportMetric(float64(n)/took.Seconds(), "rows/s")
		b.ReportMetric(float64(after.CPU-before.CPU)/n, "agent-µs/row")
		b.ReportMetric(float64(after.HWM)/(1<<20), "agent-peak-MB")
		b.ReportMetric(0, "ns/op")
	}
}
