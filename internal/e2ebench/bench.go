package e2ebench

import (
	"context"

	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

// Config is what a benchmark measures. Zero sizes take DefaultConfig's.
type Config struct {
	// Agents are the agents under test, each measured in turn.
	Agents []AgentSpec `json:"agents"`
	// PipelinesDir holds passthrough.yaml and window.yaml.
	PipelinesDir string `json:"pipelines_dir"`
	// KafkaBroker is the kfake-broker executable.
	KafkaBroker string `json:"kafka_broker"`
	// OutDir receives results.json, outage.svg and the work directories.
	OutDir string `json:"out_dir"`
	// Repeats is how often each load run is repeated.
	Repeats int `json:"repeats"`
	// MosquittoInflight is mosquitto's max_inflight_messages: how many QoS 1
	// messages it sends one client unacked under MQTT 3.1.1 (an MQTT 5
	// client sets its own Receive Maximum); 0 means 1000. mosquitto's own
	// default is 20.
	MosquittoInflight int `json:"mosquitto_inflight,omitempty"`
	// MQTTTLS gives mosquitto a TLS listener too, for the agent: its
	// address and CA are {mqtt_tls} and {mqtt_ca} (PSPF_BENCH_MQTT_TLS,
	// PSPF_BENCH_MQTT_CA) for a pipeline to subscribe over TLS; the
	// publishers stay on the plain listener.
	MQTTTLS bool `json:"mqtt_tls,omitempty"`
	// MaxQoS0 and MaxQoS1 are the messages of a max-rate run.
	MaxQoS0 uint64 `json:"max_qos0_messages"`
	MaxQoS1 uint64 `json:"max_qos1_messages"`
	// Rates are the fixed rates (msg/s, QoS 1) run for RateDuration each.
	Rates        []float64     `json:"rates"`
	RateDuration time.Duration `json:"rate_duration_ns"`
	// WindowMessages is the size of a max-rate run of the window pipeline.
	WindowMessages uint64 `json:"window_messages"`
	// Conns publishing connections, Sensors topics, Size payload bytes.
	Conns   int `json:"conns"`
	Sensors int `json:"sensors"`
	Size    int `json:"size"`
	// Mix is the share of filtered and invalid payloads.
	Mix Mix `json:"mix"`
	// IdleWait is how long after its start the agent's idle memory is read
	// (pspf-edge releases its start-up pages after 10 s).
	IdleWait time.Duration `json:"idle_wait_ns"`
	// Settle is how long a run waits without new arrivals before it counts
	// the rest as lost.
	Settle time.Duration `json:"settle_ns"`
	// Pause is the quiet time between runs.
	Pause time.Duration `json:"pause_ns"`
	// Outage is the outage scenario; a zero Duration skips it.
	Outage Outage `json:"outage"`
	// LowRate is the low-rate table (lowrate.go); a zero Duration skips it.
	LowRate LowRate `json:"low_rate"`
	// Log receives progress lines; nil discards them.
	Log io.Writer `json:"-"`
}

// Outage is a steady QoS 1 stream with the Kafka broker stopped in the
// middle.
type Outage struct {
	Rate     float64       `json:"rate"`
	Duration time.Duration `json:"duration_ns"`
	// Start is when the broker stops, Down how long it stays down.
	Start time.Duration `json:"start_ns"`
	Down  time.Duration `json:"down_ns"`
}

// DefaultConfig is the full `make bench-e2e` run (a few minutes).
func DefaultConfig() Config {
	return Config{
		Agents:         []AgentSpec{{Name: "pspf-edge", Cmd: DefaultAgentCmd}},
		PipelinesDir:   "pipelines/bench",
		KafkaBroker:    "bin/kfake-broker",
		OutDir:         "bench-results",
		Repeats:        2,
		MaxQoS0:        200_000,
		MaxQoS1:        100_000,
		Rates:          []float64{2_000, 10_000},
		RateDuration:   5 * time.Second,
		WindowMessages: 100_000,
		Conns:          4,
		Sensors:        100,
		Size:           200,
		Mix:            Mix{Filtered: 0.02, Invalid: 0.01},
		IdleWait:       12 * time.Second,
		Settle:         3 * time.Second,
		Pause:          2 * time.Second,
		Outage:         Outage{Rate: 2_000, Duration: 60 * time.Second, Start: 20 * time.Second, Down: 20 * time.Second},
		LowRate:        DefaultLowRate(),
	}
}

// Results is everything one benchmark measured.
type Results struct {
	Started  time.Time       `json:"started"`
	Host     Host            `json:"host"`
	Config   Config          `json:"config"`
	Ceiling  []RunResult     `json:"ceiling"`
	Runs     []RunResult     `json:"runs"`
	Sessions []Session       `json:"sessions"`
	Outages  []OutageResult  `json:"outages"`
	Idle     []IdleResult    `json:"idle,omitempty"`
	LowRate  []LowRateResult `json:"low_rate,omitempty"`
	Errors   []string        `json:"errors,omitempty"`
}

// Host describes the machine.
type Host struct {
	CPUs      int    `json:"cpus"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	Load1     string `json:"loadavg_at_start"`
	Mosquitto string `json:"mosquitto"`
}

// RunResult is one load run.
type RunResult struct {
	Agent    string `json:"agent"`
	Pipeline string `json:"pipeline"` // passthrough, window, or ceiling
	QoS      int    `json:"qos"`
	// Rate is the offered rate in msg/s; 0 is as fast as possible.
	Rate      float64 `json:"rate"`
	Repeat    int     `json:"repeat"`
	Published uint64  `json:"published"`
	Counts
	// Outputs is the window pipeline's output records.
	Outputs uint64 `json:"outputs,omitempty"`
	// Seconds runs from the first publish to the last arrival.
	Seconds float64 `json:"seconds"`
	// Throughput is Delivered / Seconds, records/s.
	Throughput float64 `json:"throughput"`
	// InputRate is the rate of published messages the run got through:
	// Published × Delivered/Expected / Seconds (filtered and invalid
	// messages cost the agent work too).
	InputRate float64 `json:"input_rate"`
	// Ratio is InputRate over the median ceiling input rate of the same QoS
	// (mosquitto to a bare subscriber, which keeps every message).
	Ratio   float64  `json:"ratio_to_ceiling,omitempty"`
	Latency *Latency `json:"latency,omitempty"`
	// CPUPerRecord is the agent's user+system CPU over the run per
	// delivered record (per valid reading for the window pipeline), µs.
	CPUPerRecord float64 `json:"cpu_us_per_record,omitempty"`
	// PeakRSS is the agent's VmHWM over the run, bytes.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
	// PeakAnon is the largest RssAnon sampled every 100 ms in the run: the
	// part of PeakRSS that is not the executable's pages.
	PeakAnon int64  `json:"peak_anon_bytes,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Session is one agent process running one pipeline.
type Session struct {
	Agent    string `json:"agent"`
	Pipeline string `json:"pipeline"`
	// IdleRSS is VmRSS IdleWait after the start, before any load;
	// IdleAnon its RssAnon.
	IdleRSS  int64 `json:"idle_rss_bytes"`
	IdleAnon int64 `json:"idle_anon_bytes"`
	// StartHWM is VmHWM at that moment (the start-up peak).
	StartHWM int64 `json:"start_hwm_bytes"`
}

// bench runs one benchmark.
type bench struct {
	cfg Config
	res *Results
}

func (b *bench) logf(format string, args ...any) {
	if b.cfg.Log != nil {
		fmt.Fprintf(b.cfg.Log, format+"\n", args...)
	}
}

func (b *bench) fail(err error) {
	b.logf("error: %v", err)
	b.res.Errors = append(b.res.Errors, err.Error())
}

// Run measures the ceiling, then every agent: a passthrough session (idle
// memory, max rate QoS 0 and 1, fixed rates), an outage session and a
// window session, each with fresh brokers and a fresh agent. It
// returns what it measured even when a part failed; the error joins the
// failures.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	def := DefaultConfig()
	if len(cfg.Agents) == 0 {
		cfg.Agents = def.Agents
	}
	if cfg.Repeats < 1 {
		cfg.Repeats = 1
	}
	if cfg.Conns < 1 {
		cfg.Conns = def.Conns
	}
	if cfg.Sensors < 1 {
		cfg.Sensors = def.Sensors
	}
	if cfg.Size < 1 {
		cfg.Size = def.Size
	}
	if cfg.Settle <= 0 {
		cfg.Settle = def.Settle
	}
	b := &bench{cfg: cfg, res: &Results{Started: time.Now().UTC(), Config: cfg, Host: hostInfo()}}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return b.res, fmt.Errorf("e2ebench: %w", err)
	}
	work := filepath.Join(cfg.OutDir, "work")
	os.RemoveAll(work)

	if err := b.ceiling(ctx, filepath.Join(work, "ceiling")); err != nil {
		b.fail(err)
	}
	for _, a := range cfg.Agents {
		if cfg.MaxQoS0 > 0 || cfg.MaxQoS1 > 0 || len(cfg.Rates) > 0 {
			if err := b.session(ctx, a, "passthrough", filepath.Join(work, a.Name+"-passthrough"), false); err != nil {
				b.fail(err)
			}
		}
		if cfg.LowRate.Duration > 0 {
			if err := b.lowRate(ctx, a, filepath.Join(work, a.Name+"-lowrate")); err != nil {
				b.fail(err)
			}
		}
		// The outage runs in an agent of its own, so that its memory
		// figures owe nothing to the max-rate runs before it.
		if cfg.Outage.Duration > 0 {
			if err := b.session(ctx, a, "passthrough", filepath.Join(work, a.Name+"-outage"), true); err != nil {
				b.fail(err)
			}
		}
		if cfg.WindowMessages > 0 {
			if err := b.session(ctx, a, "window", filepath.Join(work, a.Name+"-window"), false); err != nil {
				b.fail(err)
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	b.ratios()
	if len(b.res.Errors) > 0 {
		return b.res, fmt.Errorf("e2ebench: %d failures, first: %s", len(b.res.Errors), b.res.Errors[0])
	}
	return b.res, ctx.Err()
}

// ceiling measures mosquitto to a bare subscriber at QoS 0 and 1.
func (b *bench) ceiling(ctx context.Context, dir string) error {
	mq, err := startMosquitto(ctx, filepath.Join(dir, "mosquitto"), b.cfg.MosquittoInflight, false)
	if err != nil {
		return err
	}
	defer mq.stop(5 * time.Second)
	sub, err := startBareSub(mq.addr())
	if err != nil {
		return err
	}
	defer sub.close()
	for _, q := range []byte{0, 1} {
		if b.maxN(q) == 0 {
			continue
		}
		for rep := 1; rep <= b.cfg.Repeats; rep++ {
			// The bare subscriber filters nothing: every message counts.
			r := b.loadRun(ctx, sub.set, 0, mq.addr(), q, 0, b.maxN(q), false, Mix{})
			r.Agent, r.Pipeline, r.Repeat = "mosquitto→paho", "ceiling", rep
			b.res.Ceiling = append(b.res.Ceiling, r)
			b.logRun(r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

func (b *bench) maxN(qos byte) uint64 {
	if qos == 0 {
		return b.cfg.MaxQoS0
	}
	return b.cfg.MaxQoS1
}

// session runs one agent on one pipeline with fresh brokers: the load runs,
// or with outage only the outage run.
func (b *bench) session(ctx context.Context, spec AgentSpec, kind, dir string, outage bool) error {
	topic := "telemetry"
	if kind == "window" {
		topic = "telemetry-1s"
	}
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
	counter, err := NewCounter(kb.addr(), topic)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	cdone := make(chan struct{})
	go func() { counter.Run(cctx); close(cdone) }()
	defer func() { cancel(); <-cdone }()

	ag, err := startAgent(ctx, spec, kind, b.cfg.PipelinesDir, dir, mq, kb, topic)
	if err != nil {
		return err
	}
	defer ag.stop(15 * time.Second)
	if err := b.warmUp(ctx, ag, mq, counter); err != nil {
		return fmt.Errorf("e2ebench: %s %s: %w", spec.Name, kind, err)
	}
	if outage {
		if err := sleepCtx(ctx, b.cfg.Pause); err != nil {
			return err
		}
		o, err := b.outage(ctx, spec.Name, ag, mq, kb, counter)
		if err != nil {
			return err
		}
		b.res.Outages = append(b.res.Outages, o)
		b.logOutage(o)
		if ag.exited() {
			return fmt.Errorf("e2ebench: %s exited during the outage run (see %s)", spec.Name, ag.log.Name())
		}
		return nil
	}
	if wait := time.Until(ag.started.Add(b.cfg.IdleWait)); wait > 0 {
		b.logf("%s %s: ready; waiting %s for the idle reading", spec.Name, kind, wait.Round(time.Second))
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
	ps, err := ReadProc(ag.pid())
	if err != nil {
		return err
	}
	b.res.Sessions = append(b.res.Sessions, Session{Agent: spec.Name, Pipeline: kind, IdleRSS: ps.RSS, IdleAnon: ps.Anon, StartHWM: ps.HWM})
	b.logf("%s %s: idle RSS %.1f MB (start-up peak %.1f MB)", spec.Name, kind, mb(ps.RSS), mb(ps.HWM))

	type plan struct {
		qos  byte
		rate float64
		n    uint64
	}
	var plans []plan
	if kind == "window" {
		plans = append(plans, plan{1, 0, b.cfg.WindowMessages})
	} else {
		plans = append(plans, plan{0, 0, b.cfg.MaxQoS0}, plan{1, 0, b.cfg.MaxQoS1})
		for _, r := range b.cfg.Rates {
			plans = append(plans, plan{1, r, uint64(r * b.cfg.RateDuration.Seconds())})
		}
	}
	for _, p := range plans {
		if p.n == 0 {
			continue
		}
		for rep := 1; rep <= b.cfg.Repeats; rep++ {
			if ag.exited() {
				return fmt.Errorf("e2ebench: %s exited (see %s)", spec.Name, ag.log.Name())
			}
			if err := sleepCtx(ctx, b.cfg.Pause); err != nil {
				return err
			}
			r := b.loadRun(ctx, counter.Set, ag.pid(), mq.addr(), p.qos, p.rate, p.n, kind == "window", b.cfg.Mix)
			r.Agent, r.Pipeline, r.Repeat = spec.Name, kind, rep
			b.res.Runs = append(b.res.Runs, r)
			b.logRun(r)
		}
	}
	if ag.exited() {
		return fmt.Errorf("e2ebench: %s exited during the runs (see %s)", spec.Name, ag.log.Name())
	}
	return nil
}

// warmUp publishes a warm-up reading every 500 ms until one reaches Kafka
// (or, for the window pipeline, a window of them closes).
func (b *bench) warmUp(ctx context.Context, ag *agentProc, mq *mosquitto, c *Counter) error {
	deadline := time.Now().Add(60 * time.Second)
	var buf []byte
	for i := uint64(0); ; i++ {
		buf = AppendPayload(buf[:0], WarmBase+i, time.Now().UnixMicro(), KindValid, b.cfg.Size)
		if err := PublishOne(ctx, mq.addr(), "e2ebench-warm", "sensors/"+warmSensor+"/temp", buf); err != nil {
			return err
		}
		select {
		case <-c.Warm():
			return nil
		case <-ag.done:
			return fmt.Errorf("agent exited (see %s)", ag.log.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing reached Kafka within 60 s (see %s)", ag.log.Name())
		}
	}
}

// flushWindows publishes a warm-up reading far enough ahead in event time
// that every window of the run closes.
func (b *bench) flushWindows(ctx context.Context, addr string) error {
	buf := AppendPayload(nil, WarmBase, time.Now().Add(1600*time.Millisecond).UnixMicro(), KindValid, b.cfg.Size)
	return PublishOne(ctx, addr, "e2ebench-flush", "sensors/"+warmSensor+"/temp", buf)
}

// loadRun publishes n messages and waits until they arrived or arrivals
// stop for Settle. The load is published with b.cfg.Mix; mix is what the
// receiving end should see as valid (Mix{} for the bare subscriber, which
// filters nothing). set installs the run's accounter where records arrive;
// pid is the agent's (0 for the ceiling).
func (b *bench) loadRun(ctx context.Context, set func(Accounter), pid int, addr string, qos byte, rate float64, n uint64, window bool, mix Mix) (r RunResult) {
	r = RunResult{QoS: int(qos), Rate: rate, Published: n}
	var (
		tr   *Tracker
		wt   *WindowTally
		done func() uint64
	)
	if window {
		wt = NewWindowTally(n, mix)
		set(wt)
		done = wt.Summed
	} else {
		tr = NewTracker(n, mix)
		set(tr)
		done = tr.Delivered
	}
	defer set(nil)
	expected := mix.Expected(n)
	var cpu0 ProcSample
	if pid > 0 {
		if err := ResetPeak(pid); err != nil {
			r.Error = err.Error()
		}
		cpu0, _ = ReadProc(pid)
		stop := make(chan struct{})
		sampled := make(chan int64)
		go func() { sampled <- peakAnon(pid, stop) }()
		defer func() { close(stop); r.PeakAnon = <-sampled }()
	}
	load := NewLoad(LoadConfig{Addr: addr, QoS: qos, Messages: n, Rate: rate, Conns: b.cfg.Conns, Sensors: b.cfg.Sensors, Size: b.cfg.Size, Mix: b.cfg.Mix})
	start := time.Now()
	if err := load.Run(ctx, fmt.Sprintf("e2ebench-%d", start.UnixNano())); err != nil {
		r.Error = err.Error()
	}
	if window && ctx.Err() == nil {
		if err := b.flushWindows(ctx, addr); err != nil {
			r.Error = err.Error()
		}
	}
	b.waitArrivals(ctx, done, expected, b.cfg.Settle)
	if pid > 0 {
		if cpu1, err := ReadProc(pid); err == nil {
			r.PeakRSS = cpu1.HWM
			if d := done(); d > 0 {
				r.CPUPerRecord = float64(cpu1.CPU-cpu0.CPU) / float64(min(d, expected))
			}
		}
	}
	var last time.Time
	if window {
		r.Counts, r.Outputs, _, last = wt.Result()
	} else {
		var lat Latency
		r.Counts, lat, _, last = tr.Result()
		r.Latency = &lat
	}
	if !last.IsZero() {
		r.Seconds = last.Sub(start).Seconds()
		if r.Seconds > 0 {
			r.Throughput = float64(r.Delivered) / r.Seconds
			if r.Expected > 0 {
				r.InputRate = float64(r.Published) * float64(r.Delivered) / float64(r.Expected) / r.Seconds
			}
		}
	}
	return r
}

// peakAnon samples the RssAnon of pid every 100 ms until stop is closed
// and returns the largest.
func peakAnon(pid int, stop <-chan struct{}) int64 {
	var peak int64
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if ps, err := ReadProc(pid); err == nil {
			peak = max(peak, ps.Anon)
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

// waitArrivals returns once done() reaches want, or when it has not moved
// for settle.
func (b *bench) waitArrivals(ctx context.Context, done func() uint64, want uint64, settle time.Duration) {
	last, since := done(), time.Now()
	for ctx.Err() == nil {
		d := done()
		if d >= want {
			return
		}
		if d != last {
			last, since = d, time.Now()
		} else if time.Since(since) > settle {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ratios sets each agent run's ratio to the median ceiling throughput of
// its QoS.
func (b *bench) ratios() {
	for i := range b.res.Runs {
		r := &b.res.Runs[i]
		if r.Rate != 0 || r.Pipeline != "passthrough" {
			continue
		}
		var tp []float64
		for _, c := range b.res.Ceiling {
			if c.QoS == r.QoS && c.InputRate > 0 {
				tp = append(tp, c.InputRate)
			}
		}
		if len(tp) > 0 {
			r.Ratio = r.InputRate / median(tp)
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func hostInfo() Host {
	h := Host{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.Load1 = string(b[:max(0, len(b)-1)])
	}
	if bin, err := findMosquitto(); err == nil {
		h.Mosquitto = bin
	}
	return h
}
