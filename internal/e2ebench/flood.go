package e2ebench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FloodConfig is the memory benchmark of large payloads: bursts of
// payloads just under the MQTT source's default max_payload, published as
// fast as mosquitto takes them, with the Kafka broker up and down. It
// measures how much memory the agent takes for them, and how much of it it
// gives back once the burst is over.
type FloodConfig struct {
	// Agent is the agent under test; it must serve pspf-edge's admin API
	// ({admin}): the backlog and the Go heap are read from it.
	Agent AgentSpec `json:"agent"`
	// PipelinesDir holds passthrough.yaml.
	PipelinesDir string `json:"pipelines_dir"`
	// KafkaBroker is the kfake-broker executable.
	KafkaBroker string `json:"kafka_broker"`
	// Dir receives the work files (brokers' and agent's logs and data).
	Dir string `json:"dir"`
	// Messages of Size bytes make one flood; Conns connections publish them.
	Messages uint64 `json:"messages"`
	Size     int    `json:"size"`
	Conns    int    `json:"conns"`
	// Mix is the share of filtered and invalid payloads of every phase.
	Mix Mix `json:"mix"`
	// IdleWait is the agent's age at which its idle memory is read
	// (pspf-edge releases its start-up pages after 10 s).
	IdleWait time.Duration `json:"idle_wait_ns"`
	// Settle bounds the wait for memory to come back to its idle level
	// after a phase; Slack is how far above idle counts as back.
	Settle time.Duration `json:"settle_ns"`
	Slack  int64         `json:"slack_bytes"`
	// Mixed adds a phase in which the large QoS 1 flood runs alongside
	// large QoS 0 messages and a stream of small QoS 1 readings.
	Mixed bool `json:"mixed"`
	// Log receives progress lines; nil discards them.
	Log io.Writer `json:"-"`
}

// DefaultFloodConfig is the flood of issue 20: 1,000 messages of 250 KB.
func DefaultFloodConfig() FloodConfig {
	return FloodConfig{
		Agent:        AgentSpec{Name: "pspf-edge", Cmd: DefaultAgentCmd},
		PipelinesDir: "pipelines/bench",
		KafkaBroker:  "bin/kfake-broker",
		Dir:          "bench-results/flood",
		Messages:     1000,
		Size:         250_000,
		Conns:        4,
		Mix:          Mix{Filtered: 0.02, Invalid: 0.02},
		IdleWait:     11 * time.Second,
		Settle:       30 * time.Second,
		Slack:        6 << 20,
		Mixed:        true,
	}
}

// FloodPhase is one burst and what the agent's memory did.
type FloodPhase struct {
	// Name is kafka-up, kafka-down (the flood goes to the log while the
	// broker is stopped), drain (the broker is back: the backlog drains)
	// or mixed.
	Name      string `json:"name"`
	Published uint64 `json:"published"`
	Counts
	// Seconds runs from the first publish until every valid reading was
	// delivered (in kafka-down: appended to the log).
	Seconds float64 `json:"seconds"`
	// PeakRSS is the agent's VmHWM over the phase; PeakHeap the largest
	// Go heap in use sampled every 100 ms.
	PeakRSS  int64 `json:"peak_rss_bytes"`
	PeakHeap int64 `json:"peak_heap_bytes"`
	// AfterRSS and AfterHeap are read once both were within Slack of idle,
	// or at the end of Settle; SettleSeconds is how long that took after
	// the phase's end (Settle's length if they never came back).
	AfterRSS      int64   `json:"after_rss_bytes"`
	AfterAnon     int64   `json:"after_anon_bytes"` // the RssAnon part of AfterRSS
	AfterHeap     int64   `json:"after_heap_bytes"`
	SettleSeconds float64 `json:"settle_seconds"`
	Settled       bool    `json:"settled"`
	Error         string  `json:"error,omitempty"`
}

// FloodResult is a whole flood benchmark: the agent's idle memory and its
// phases.
type FloodResult struct {
	Config   FloodConfig  `json:"config"`
	IdleRSS  int64        `json:"idle_rss_bytes"`
	IdleAnon int64        `json:"idle_anon_bytes"`
	IdleHeap int64        `json:"idle_heap_bytes"`
	Phases   []FloodPhase `json:"phases"`
}

// Phase returns the phase named name, or a zero one.
func (r *FloodResult) Phase(name string) FloodPhase {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return FloodPhase{}
}

// Flood runs the flood benchmark on one agent with fresh brokers: after
// the idle reading, a flood with Kafka up, one with Kafka stopped (to the
// log), the drain once it is back, and with Mixed the mixed flood. It
// returns what it measured even when a phase failed.
func Flood(ctx context.Context, cfg FloodConfig) (*FloodResult, error) {
	def := DefaultFloodConfig()
	if cfg.Messages == 0 {
		cfg.Messages = def.Messages
	}
	if cfg.Size <= 0 {
		cfg.Size = def.Size
	}
	if cfg.Conns <= 0 {
		cfg.Conns = def.Conns
	}
	if cfg.Settle <= 0 {
		cfg.Settle = def.Settle
	}
	if cfg.Slack <= 0 {
		cfg.Slack = def.Slack
	}
	res := &FloodResult{Config: cfg}
	if !strings.Contains(cfg.Agent.Cmd, "{admin}") {
		return res, fmt.Errorf("e2ebench: flood: agent %q: the command needs {admin}", cfg.Agent.Name)
	}
	f := &flood{cfg: cfg, res: res, bench: &bench{cfg: Config{Size: 200, Log: cfg.Log}}}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return res, fmt.Errorf("e2ebench: %w", err)
	}
	mq, err := startMosquitto(ctx, filepath.Join(cfg.Dir, "mosquitto"), 0, false)
	if err != nil {
		return res, err
	}
	defer mq.stop(5 * time.Second)
	kb, err := startKafka(ctx, cfg.KafkaBroker, filepath.Join(cfg.Dir, "kafka"), "telemetry:1")
	if err != nil {
		return res, err
	}
	defer kb.stop()
	counter, err := NewCounter(kb.addr(), "telemetry")
	if err != nil {
		return res, err
	}
	cctx, cancel := context.WithCancel(ctx)
	cdone := make(chan struct{})
	go func() { counter.Run(cctx); close(cdone) }()
	defer func() { cancel(); <-cdone }()

	ag, err := startAgent(ctx, cfg.Agent, "passthrough", cfg.PipelinesDir, cfg.Dir, mq, kb, "telemetry")
	if err != nil {
		return res, err
	}
	defer ag.stop(15 * time.Second)
	f.ag, f.mq, f.kb, f.counter = ag, mq, kb, counter
	if err := f.bench.warmUp(ctx, ag, mq, counter); err != nil {
		return res, fmt.Errorf("e2ebench: flood: %w", err)
	}
	if wait := time.Until(ag.started.Add(cfg.IdleWait)); wait > 0 {
		if err := sleepCtx(ctx, wait); err != nil {
			return res, err
		}
	}
	ps, err := ReadProc(ag.pid())
	if err != nil {
		return res, err
	}
	res.IdleRSS, res.IdleAnon = ps.RSS, ps.Anon
	if res.IdleHeap, err = ag.heapInUse(ctx); err != nil {
		return res, err
	}
	f.logf("flood: idle RSS %.1f MB, heap %.1f MB", mb(res.IdleRSS), mb(res.IdleHeap))

	var errs []error
	run := func(name string, loads []LoadConfig, kafkaDown bool) {
		if ctx.Err() != nil {
			return
		}
		for _, p := range f.phase(ctx, name, loads, kafkaDown) {
			res.Phases = append(res.Phases, p)
			f.logf("flood %-10s published %d delivered %d lost %d dup %d in %.1f s: peak RSS %.1f MB, peak heap %.1f MB; after %.1f s: RSS %.1f MB, heap %.1f MB%s",
				p.Name, p.Published, p.Delivered, p.Lost, p.Duplicates, p.Seconds, mb(p.PeakRSS), mb(p.PeakHeap),
				p.SettleSeconds, mb(p.AfterRSS), mb(p.AfterHeap), errText(p.Error))
			if p.Error != "" {
				errs = append(errs, fmt.Errorf("e2ebench: flood: %s: %s", p.Name, p.Error))
			}
		}
		if ag.exited() {
			errs = append(errs, fmt.Errorf("e2ebench: flood: the agent exited (see %s)", ag.log.Name()))
		}
	}
	large := LoadConfig{Addr: mq.addr(), QoS: 1, Messages: cfg.Messages, Conns: cfg.Conns, Sensors: 10, Size: cfg.Size, Mix: cfg.Mix, Noise: true}
	run("kafka-up", []LoadConfig{large}, false)
	large.First += large.Messages
	if len(errs) == 0 {
		run("kafka-down", []LoadConfig{large}, true)
	}
	if cfg.Mixed && len(errs) == 0 {
		large.First += large.Messages
		qos0 := large
		qos0.QoS, qos0.First, qos0.Messages, qos0.Conns = 0, large.First+large.Messages, large.Messages/2, 1
		small := large
		small.Size, small.First, small.Messages, small.Conns, small.Noise = 200, qos0.First+qos0.Messages, 20*large.Messages, 2, false
		run("mixed", []LoadConfig{large, qos0, small}, false)
	}
	return res, errors.Join(errs...)
}

type flood struct {
	cfg     FloodConfig
	res     *FloodResult
	bench   *bench
	ag      *agentProc
	mq      *mosquitto
	kb      *kafkaBroker
	counter *Counter
}

func (f *flood) logf(format string, args ...any) { f.bench.logf(format, args...) }

// phase publishes loads side by side and waits until every valid reading
// was delivered. With kafkaDown the broker is stopped first and the phase
// ends once the readings are in the agent's log; the broker then starts
// again, and the drain of that backlog is a second phase.
func (f *flood) phase(ctx context.Context, name string, loads []LoadConfig, kafkaDown bool) []FloodPhase {
	first, end := loads[0].First, loads[0].First
	for _, l := range loads {
		first, end = min(first, l.First), max(end, l.First+l.Messages)
	}
	tr := NewRangeTracker(first, end, f.cfg.Mix)
	f.counter.Set(tr)
	defer f.counter.Set(nil)
	want := tr.Expected()
	var backlog0 uint64
	if kafkaDown {
		f.kb.stop()
		_, backlog0, _ = f.ag.backlog(ctx)
	}
	p := f.measure(ctx, name, end-first, func() error {
		var wg sync.WaitGroup
		errs := make([]error, len(loads))
		stamp := time.Now().UnixNano()
		for i, l := range loads {
			wg.Go(func() { errs[i] = NewLoad(l).Run(ctx, fmt.Sprintf("flood-%s-%d-%d", name, i, stamp)) })
		}
		wg.Wait()
		if kafkaDown {
			// In the log: the backlog grew by every valid reading.
			f.bench.waitArrivals(ctx, func() uint64 {
				_, n, _ := f.ag.backlog(ctx)
				return n - min(n, backlog0)
			}, want, 30*time.Second)
		} else {
			f.bench.waitArrivals(ctx, tr.Delivered, want, 30*time.Second)
		}
		return errors.Join(errs...)
	})
	if !kafkaDown {
		p.Counts, _, _, _ = tr.Result()
		return []FloodPhase{checkLost(p)}
	}
	d := f.measure(ctx, "drain", end-first, func() error {
		if err := f.kb.start(ctx); err != nil {
			return err
		}
		f.bench.waitArrivals(ctx, tr.Delivered, want, 30*time.Second)
		return nil
	})
	d.Counts, _, _, _ = tr.Result()
	return []FloodPhase{p, checkLost(d)}
}

func checkLost(p FloodPhase) FloodPhase {
	if p.Lost > 0 && p.Error == "" {
		p.Error = fmt.Sprintf("%d of %d valid readings never arrived", p.Lost, p.Expected)
	}
	return p
}

// measure runs work with the agent's peak RSS reset and its heap sampled,
// then waits for its memory to settle.
func (f *flood) measure(ctx context.Context, name string, published uint64, work func() error) FloodPhase {
	p := FloodPhase{Name: name, Published: published}
	if err := ResetPeak(f.ag.pid()); err != nil {
		p.Error = err.Error()
	}
	stop := make(chan struct{})
	sampled := make(chan int64)
	go func() { sampled <- f.ag.peakHeap(ctx, stop) }()
	start := time.Now()
	if err := work(); err != nil {
		p.Error = err.Error()
	}
	p.Seconds = time.Since(start).Seconds()
	close(stop)
	p.PeakHeap = <-sampled
	if ps, err := ReadProc(f.ag.pid()); err == nil {
		p.PeakRSS = ps.HWM
	}
	f.settle(ctx, &p)
	return p
}

// settle waits until the agent's RSS and heap are back within Slack of
// their idle levels, or Settle has passed, and records where they ended.
func (f *flood) settle(ctx context.Context, p *FloodPhase) {
	start := time.Now()
	for {
		ps, err := ReadProc(f.ag.pid())
		heap, herr := f.ag.heapInUse(ctx)
		if err != nil || herr != nil {
			p.Error = errors.Join(err, herr).Error()
			return
		}
		p.AfterRSS, p.AfterAnon, p.AfterHeap = ps.RSS, ps.Anon, heap
		p.SettleSeconds = time.Since(start).Seconds()
		if ps.RSS <= f.res.IdleRSS+f.cfg.Slack && heap <= f.res.IdleHeap+f.cfg.Slack {
			p.Settled = true
			return
		}
		if time.Since(start) > f.cfg.Settle || sleepCtx(ctx, 250*time.Millisecond) != nil {
			return
		}
	}
}

// heapInUse reads go_memstats_heap_inuse_bytes from the agent's /metrics.
func (a *agentProc) heapInUse(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.admin+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("e2ebench: metrics: %w", err)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("e2ebench: metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("e2ebench: metrics: heap in use %q: %w", v, err)
			}
			return int64(n), nil
		}
	}
	return 0, fmt.Errorf("e2ebench: metrics: no go_memstats_heap_inuse_bytes")
}

// peakHeap samples the agent's heap in use every 100 ms until stop is
// closed and returns the largest.
func (a *agentProc) peakHeap(ctx context.Context, stop <-chan struct{}) int64 {
	var peak int64
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if h, err := a.heapInUse(ctx); err == nil {
			peak = max(peak, h)
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

// WriteFloodTable prints the flood benchmark's phases.
func WriteFloodTable(w io.Writer, r *FloodResult) {
	fmt.Fprintf(w, "flood: %d messages of %d bytes per phase, %d connections; idle RSS %.1f MB (anon %.1f MB), heap %.1f MB\n",
		r.Config.Messages, r.Config.Size, r.Config.Conns, mb(r.IdleRSS), mb(r.IdleAnon), mb(r.IdleHeap))
	fmt.Fprintf(w, "%-10s %9s %9s %5s %5s %7s %9s %9s %9s %9s %9s %8s\n",
		"phase", "published", "delivered", "lost", "dup", "s", "peak RSS", "peak heap", "after RSS", "after anon", "after heap", "settle s")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "%-10s %9d %9d %5d %5d %7.1f %6.1f MB %6.1f MB %6.1f MB %6.1f MB %6.1f MB %8.1f%s\n",
			p.Name, p.Published, p.Delivered, p.Lost, p.Duplicates, p.Seconds, mb(p.PeakRSS), mb(p.PeakHeap),
			mb(p.AfterRSS), mb(p.AfterAnon), mb(p.AfterHeap), p.SettleSeconds, errText(p.Error))
	}
}

// WriteFloodFile writes the results as JSON to path.
func WriteFloodFile(path string, r *FloodResult) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("e2ebench: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("e2ebench: %w", err)
	}
	return nil
}
