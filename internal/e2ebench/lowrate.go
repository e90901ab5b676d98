package e2ebench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"
)

// LowRate is the low-rate part of the benchmark: what the agent costs per
// record where gateways live (100 and 2,000 msg/s) and at max rate, at QoS 0
// and 1, from one publishing connection and from four, and what it costs
// idle. A zero Duration skips it.
type LowRate struct {
	// Rates in msg/s; 0 is as fast as possible (MaxMessages messages).
	Rates       []float64     `json:"rates"`
	QoS         []int         `json:"qos"`
	Conns       []int         `json:"conns"`
	Duration    time.Duration `json:"duration_ns"`
	MaxMessages uint64        `json:"max_messages"`
	// Idle is how long the idle agent is watched (after warm-up and a
	// pause), for its CPU and wake-ups.
	Idle time.Duration `json:"idle_ns"`
	// FSKBytes, if set, is a file system's counter of kB written
	// (/sys/fs/ext4/DEV/lifetime_write_kbytes), read around each run:
	// everything written to the device, the journal included. Only the
	// agent's data should be on that file system.
	FSKBytes string `json:"fs_kbytes,omitempty"`
}

// DefaultLowRate is the low-rate part of `make bench-e2e` (about three
// minutes).
func DefaultLowRate() LowRate {
	return LowRate{Rates: []float64{100, 2_000, 0}, QoS: []int{0, 1}, Conns: []int{1, 4},
		Duration: 10 * time.Second, MaxMessages: 50_000, Idle: 10 * time.Second}
}

// LowRateResult is one run of the low-rate table.
type LowRateResult struct {
	QoS        int     `json:"qos"`
	Rate       float64 `json:"rate"` // offered msg/s; 0 max
	Conns      int     `json:"conns"`
	Published  uint64  `json:"published"`
	Delivered  uint64  `json:"delivered"`
	Lost       uint64  `json:"lost"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	// CPUPerRecord is user+system µs per delivered record.
	CPUPerRecord float64 `json:"cpu_us_per_record"`
	// WakeupsPerSec counts the agent's voluntary context switches (a thread
	// slept and was woken), summed over its threads, per second.
	WakeupsPerSec float64 `json:"wakeups_per_sec"`
	// FsyncsPerSec counts the pipeline log's segment fsyncs per second
	// (status API log.fsyncs); -1 unknown.
	FsyncsPerSec float64 `json:"fsyncs_per_sec"`
	// DiskPerRecord is /proc/PID/io write_bytes per delivered record:
	// the bytes the agent made the kernel write to the device (pages
	// dirtied; not the file system's journal). DiskPerPayload is the same
	// per payload byte.
	DiskPerRecord  float64 `json:"disk_bytes_per_record"`
	DiskPerPayload float64 `json:"disk_bytes_per_payload_byte"`
	// FSPerRecord is what the file system of LowRate.FSKBytes wrote to its
	// device per delivered record, journal and metadata included (0: not
	// measured).
	FSPerRecord float64 `json:"fs_bytes_per_record,omitempty"`
	P50         float64 `json:"p50_ms"`
	// PeakRSS is VmHWM over the run, PeakAnon the largest RssAnon sampled
	// (the rest of the peak is file-backed: the executable's pages).
	PeakRSS  int64  `json:"peak_rss_bytes"`
	PeakAnon int64  `json:"peak_anon_bytes"`
	Error    string `json:"error,omitempty"`
}

// IdleResult is the idle agent of the low-rate session.
type IdleResult struct {
	// RSS, Anon and File at 3 s after the start (VmRSS, RssAnon,
	// RssFile), before any load.
	RSS3s, Anon3s, File3s int64
	// CPUPercent of one core and WakeupsPerSec over LowRate.Idle.
	CPUPercent    float64 `json:"cpu_percent"`
	WakeupsPerSec float64 `json:"wakeups_per_sec"`
	FsyncsPerSec  float64 `json:"fsyncs_per_sec"`
	Seconds       float64 `json:"seconds"`
}

// Activity is what a process did so far: CPU, wake-ups, device writes.
type Activity struct {
	At time.Time
	// CPU is user plus system time in µs.
	CPU int64
	// Wakeups sums voluntary_ctxt_switches over the threads.
	Wakeups int64
	// WriteBytes is write_bytes of /proc/PID/io.
	WriteBytes int64
}

// ReadActivity samples process pid (Linux).
func ReadActivity(pid int) (Activity, error) {
	a := Activity{At: time.Now()}
	ps, err := ReadProc(pid)
	if err != nil {
		return a, err
	}
	a.CPU = ps.CPU
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return a, fmt.Errorf("e2ebench: tasks: %w", err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		a.Wakeups += statusField(b, "voluntary_ctxt_switches")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return a, fmt.Errorf("e2ebench: io: %w", err)
	}
	a.WriteBytes = statusField(b, "write_bytes")
	return a, nil
}

// statusField returns the number after "name:" in a /proc text file (0
// where it is missing); a "kB" unit is applied.
func statusField(b []byte, name string) int64 {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(k) != name {
			continue
		}
		f := bytes.Fields(v)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(string(f[0]), 10, 64)
		if len(f) > 1 && string(f[1]) == "kB" {
			n *= 1024
		}
		return n
	}
	return 0
}

// fsyncs sums log.fsyncs over the agent's pipelines (-1 without an admin
// API).
func (a *agentProc) fsyncs(ctx context.Context) int64 {
	if a.admin == "" {
		return -1
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.admin+"/api/v1/pipelines", nil)
	if err != nil {
		return -1
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Pipelines []struct {
			Log struct {
				Fsyncs *int64 `json:"fsyncs"`
			} `json:"log"`
		} `json:"pipelines"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return -1
	}
	var n int64
	for _, p := range v.Pipelines {
		if p.Log.Fsyncs == nil {
			return -1
		}
		n += *p.Log.Fsyncs
	}
	return n
}

// lowRate runs the low-rate session of one agent: memory 3 s after the
// start, the idle agent, then every rate × QoS × connections.
func (b *bench) lowRate(ctx context.Context, spec AgentSpec, dir string) error {
	lr := b.cfg.LowRate
	mq, err := startMosquitto(ctx, filepath.Join(dir, "mosquitto"), b.cfg.MosquittoInflight, b.cfg.MQTTTLS)
	if err != nil {
		return err
	}
	defer mq.stop(5 * time.Second)
	kb, err := startKafka(ctx, b.cfg.KafkaBroker, filepath.Join(dir, "kafka"), "telemetry:1,telemetry-1s:1")
	if err != nil {
		return err
	}
	defer kb.stop()
	counter, err := NewCounter(kb.addr(), "telemetry")
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	cdone := make(chan struct{})
	go func() { counter.Run(cctx); close(cdone) }()
	defer func() { cancel(); <-cdone }()

	ag, err := startAgent(ctx, spec, "passthrough", b.cfg.PipelinesDir, dir, mq, kb, "telemetry")
	if err != nil {
		return err
	}
	defer ag.stop(15 * time.Second)
	var idle IdleResult
	if err := sleepCtx(ctx, time.Until(ag.started.Add(3*time.Second))); err != nil {
		return err
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ag.pid())); err == nil {
		idle.RSS3s, idle.Anon3s, idle.File3s = statusField(st, "VmRSS"), statusField(st, "RssAnon"), statusField(st, "RssFile")
	}
	if err := b.warmUp(ctx, ag, mq, counter); err != nil {
		return fmt.Errorf("e2ebench: %s low-rate: %w", spec.Name, err)
	}
	// Let the warm-up's fsyncs, sink batch and cursor write pass.
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return err
	}
	a0, err := ReadActivity(ag.pid())
	if err != nil {
		return err
	}
	f0 := ag.fsyncs(ctx)
	if err := sleepCtx(ctx, lr.Idle); err != nil {
		return err
	}
	a1, err := ReadActivity(ag.pid())
	if err != nil {
		return err
	}
	sec := a1.At.Sub(a0.At).Seconds()
	idle.Seconds = sec
	idle.CPUPercent = float64(a1.CPU-a0.CPU) / 1e6 / sec * 100
	idle.WakeupsPerSec = float64(a1.Wakeups-a0.Wakeups) / sec
	idle.FsyncsPerSec = perSec(f0, ag.fsyncs(ctx), sec)
	b.res.Idle = append(b.res.Idle, idle)
	b.logf("%s idle: RSS at 3 s %.1f MB (anon %.1f, file %.1f); %.3f %% of a core, %.2f wake-ups/s, %.2f fsyncs/s over %.0f s",
		spec.Name, mb(idle.RSS3s), mb(idle.Anon3s), mb(idle.File3s), idle.CPUPercent, idle.WakeupsPerSec, idle.FsyncsPerSec, sec)

	for _, q := range lr.QoS {
		for _, c := range lr.Conns {
			for _, rate := range lr.Rates {
				n := lr.MaxMessages
				if rate > 0 {
					n = uint64(rate * lr.Duration.Seconds())
				}
				if ag.exited() {
					return fmt.Errorf("e2ebench: %s exited (see %s)", spec.Name, ag.log.Name())
				}
				if err := sleepCtx(ctx, b.cfg.Pause); err != nil {
					return err
				}
				r := b.lowRateRun(ctx, ag, mq, counter, byte(q), rate, c, n)
				b.res.LowRate = append(b.res.LowRate, r)
				fs := ""
				if r.FSPerRecord > 0 {
					fs = fmt.Sprintf(", file system %.0f B/rec with its journal (%.2f per payload byte)", r.FSPerRecord, r.FSPerRecord/float64(b.cfg.Size))
				}
				b.logf("%s low-rate qos %d %s ×%d: %.0f rec/s, cpu %.1f µs/rec, %.0f wake-ups/s, %.1f fsyncs/s, %.0f B/rec on disk (%.2f per payload byte)%s%s",
					spec.Name, r.QoS, rateText(r.Rate), r.Conns, r.Throughput, r.CPUPerRecord, r.WakeupsPerSec, r.FsyncsPerSec, r.DiskPerRecord, r.DiskPerPayload, fs, errText(r.Error))
			}
		}
	}
	return nil
}

func perSec(a, b int64, sec float64) float64 {
	if a < 0 || b < 0 || sec <= 0 {
		return -1
	}
	return float64(b-a) / sec
}

// lowRateRun is one load run with the agent's activity measured around it.
func (b *bench) lowRateRun(ctx context.Context, ag *agentProc, mq *mosquitto, counter *Counter, qos byte, rate float64, conns int, n uint64) LowRateResult {
	lr := LowRateResult{QoS: int(qos), Rate: rate, Conns: conns, Published: n}
	bb := *b
	bb.cfg.Conns = conns
	a0, err := ReadActivity(ag.pid())
	if err != nil {
		lr.Error = err.Error()
		return lr
	}
	f0 := ag.fsyncs(ctx)
	k0, kerr := readKBytes(b.cfg.LowRate.FSKBytes)
	r := bb.loadRun(ctx, counter.Set, ag.pid(), mq.addr(), qos, rate, n, false, b.cfg.Mix)
	a1, err := ReadActivity(ag.pid())
	if err != nil {
		lr.Error = err.Error()
		return lr
	}
	sec := a1.At.Sub(a0.At).Seconds()
	lr.Delivered, lr.Lost, lr.Seconds, lr.Throughput, lr.Error = r.Delivered, r.Lost, r.Seconds, r.Throughput, r.Error
	lr.CPUPerRecord, lr.PeakRSS, lr.PeakAnon = r.CPUPerRecord, r.PeakRSS, r.PeakAnon
	if r.Latency != nil {
		lr.P50 = r.Latency.P50
	}
	lr.WakeupsPerSec = float64(a1.Wakeups-a0.Wakeups) / sec
	lr.FsyncsPerSec = perSec(f0, ag.fsyncs(ctx), sec)
	if kerr != nil && lr.Error == "" {
		lr.Error = kerr.Error()
	}
	if b.cfg.LowRate.FSKBytes != "" && kerr == nil && r.Delivered > 0 {
		// The journal is committed every 5 s: wait for the run's commit.
		if sleepCtx(ctx, 6*time.Second) == nil {
			if k1, err := readKBytes(b.cfg.LowRate.FSKBytes); err == nil {
				lr.FSPerRecord = float64(k1-k0) * 1024 / float64(r.Delivered)
			}
		}
	}
	if r.Delivered > 0 {
		lr.DiskPerRecord = float64(a1.WriteBytes-a0.WriteBytes) / float64(r.Delivered)
		lr.DiskPerPayload = lr.DiskPerRecord / float64(b.cfg.Size)
	}
	return lr
}

// readKBytes reads a kB counter file (none: 0).
func readKBytes(path string) (int64, error) {
	if path == "" {
		return 0, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("e2ebench: %w", err)
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("e2ebench: %s: %w", path, err)
	}
	return n, nil
}

// writeLowRate prints the idle and low-rate tables.
func writeLowRate(w io.Writer, res *Results) {
	if len(res.Idle) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "idle\tRSS at 3 s MB\tanon MB\tfile MB\tCPU % of a core\twake-ups/s\tfsyncs/s\tover s\t")
		for _, i := range res.Idle {
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%.3f\t%.2f\t%.2f\t%.0f\t\n", f1(mb(i.RSS3s)), f1(mb(i.Anon3s)), f1(mb(i.File3s)), i.CPUPercent, i.WakeupsPerSec, i.FsyncsPerSec, i.Seconds)
		}
		tw.Flush()
	}
	if len(res.LowRate) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "low rate\tqos\tconns\trate\tdelivered\tlost\trec/s\tp50 ms\tcpu µs/rec\twake-ups/s\tfsyncs/s\tdisk B/rec\tdisk B/payload B\tpeak RSS MB\tpeak anon MB\t")
	for _, r := range res.LowRate {
		fmt.Fprintf(tw, "\t%d\t%d\t%s\t%d\t%d\t%.0f\t%s\t%.1f\t%.0f\t%.1f\t%.0f\t%.2f\t%s\t%s\t%s\n", r.QoS, r.Conns, rateText(r.Rate), r.Delivered, r.Lost,
			r.Throughput, f1(r.P50), r.CPUPerRecord, r.WakeupsPerSec, r.FsyncsPerSec, r.DiskPerRecord, r.DiskPerPayload, f1(mb(r.PeakRSS)), f1(mb(r.PeakAnon)), errText(r.Error))
	}
	tw.Flush()
}
