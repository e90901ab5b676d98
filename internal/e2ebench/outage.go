package e2ebench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Sample is one moment of the outage run.
type Sample struct {
	// T is seconds since the load started.
	T float64 `json:"t"`
	// Published and Delivered are cumulative; Throughput is the delivered
	// rate since the previous sample, records/s.
	Published  uint64  `json:"published"`
	Delivered  uint64  `json:"delivered"`
	Throughput float64 `json:"throughput"`
	// BacklogBytes and BacklogRecords are the agent's (-1 without an admin API).
	BacklogBytes   int64 `json:"backlog_bytes"`
	BacklogRecords int64 `json:"backlog_records"`
	RSS            int64 `json:"rss_bytes"`
	Anon           int64 `json:"anon_bytes"`
}

// OutageResult is the outage run.
type OutageResult struct {
	Agent string  `json:"agent"`
	Rate  float64 `json:"rate"`
	Counts
	Published uint64 `json:"published"`
	// DownAt and UpAt are when the broker stopped and answered again,
	// seconds since the load started.
	DownAt float64 `json:"down_at"`
	UpAt   float64 `json:"up_at"`
	// DrainSeconds is from UpAt until every reading published before UpAt
	// had arrived; DrainRate the records delivered in that time per second,
	// DrainRatio that over the live rate. Zero if it never drained.
	DrainSeconds float64 `json:"drain_seconds"`
	// ResumeSeconds is from UpAt until the first record arrived after it:
	// how long the agent took to notice the broker was back.
	ResumeSeconds float64 `json:"resume_seconds"`
	DrainRate     float64 `json:"drain_rate"`
	DrainRatio    float64 `json:"drain_ratio"`
	// PeakBacklogBytes and PeakBacklogRecords are the largest backlog seen.
	PeakBacklogBytes   int64 `json:"peak_backlog_bytes"`
	PeakBacklogRecords int64 `json:"peak_backlog_records"`
	// OutageRSS is the largest VmRSS sampled from DownAt to the end of the
	// drain; PeakRSS the VmHWM of the whole run.
	OutageRSS int64 `json:"outage_rss_bytes"`
	// OutageAnon is the largest RssAnon sampled in the same time.
	OutageAnon int64    `json:"outage_anon_bytes"`
	PeakRSS    int64    `json:"peak_rss_bytes"`
	Latency    Latency  `json:"latency"`
	Samples    []Sample `json:"samples"`
	Error      string   `json:"error,omitempty"`
}

// outage runs the steady stream, stops the Kafka broker at Start for Down,
// and samples the agent every 250 ms.
func (b *bench) outage(ctx context.Context, name string, ag *agentProc, mq *mosquitto, kb *kafkaBroker, counter *Counter) (OutageResult, error) {
	o := b.cfg.Outage
	n := uint64(o.Rate * o.Duration.Seconds())
	res := OutageResult{Agent: name, Rate: o.Rate, Published: n}
	tr := NewTracker(n, b.cfg.Mix)
	counter.Set(tr)
	defer counter.Set(nil)
	if err := ResetPeak(ag.pid()); err != nil {
		res.Error = err.Error()
	}
	load := NewLoad(LoadConfig{Addr: mq.addr(), QoS: 1, Messages: n, Rate: o.Rate, Conns: 1, Sensors: b.cfg.Sensors, Size: b.cfg.Size, Mix: b.cfg.Mix})
	start := time.Now()
	since := func() float64 { return time.Since(start).Seconds() }

	var (
		mu       sync.Mutex
		upAt     time.Time
		upSeq    uint64
		drainEnd time.Time
		// delivered when the broker came back and when the drain ended
		upDelivered, endDelivered uint64
		resumeAt                  time.Time
		downAt                    time.Time
	)
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(ctx, fmt.Sprintf("e2ebench-outage-%d", start.UnixNano())) }()

	// The broker: down at Start, up again after Down.
	brokerDone := make(chan error, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sleepCtx(ctx, o.Start); err != nil {
			return
		}
		b.logf("%s outage: stopping the Kafka broker at %.1f s", name, since())
		mu.Lock()
		downAt = time.Now()
		mu.Unlock()
		kb.stop()
		if err := sleepCtx(ctx, o.Down); err != nil {
			return
		}
		err := kb.start(ctx)
		mu.Lock()
		upAt, upSeq, upDelivered = time.Now(), load.Progress(), tr.Delivered()
		mu.Unlock()
		b.logf("%s outage: Kafka broker back at %.1f s", name, since())
		brokerDone <- err
		// Drained once every reading published before the broker came
		// back has arrived; checked often, the drain may take a second.
		resumed := false
		for err == nil && !tr.AllBelow(upSeq) {
			if !resumed && tr.Delivered() > upDelivered {
				resumed = true
				mu.Lock()
				resumeAt = time.Now()
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		mu.Lock()
		drainEnd, endDelivered = time.Now(), tr.Delivered()
		mu.Unlock()
	}()

	// Sampling until the load is done, the broker is back, and everything
	// arrived or arrivals stopped for Settle.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var (
		prev      Sample
		loadEnded bool
		brokerUp  bool
		lastMove  = time.Now()
	)
	expected := tr.Expected()
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case err := <-loadDone:
			loadEnded = true
			if err != nil {
				res.Error = err.Error()
			}
		case err := <-brokerDone:
			brokerUp = true
			if err != nil {
				return res, err
			}
		case <-tick.C:
		}
		s := Sample{T: since(), Published: load.Progress(), Delivered: tr.Delivered(), BacklogBytes: -1, BacklogRecords: -1}
		if dt := s.T - prev.T; dt > 0 {
			s.Throughput = float64(s.Delivered-prev.Delivered) / dt
		}
		if bb, br, ok := ag.backlog(ctx); ok {
			s.BacklogBytes, s.BacklogRecords = bb, int64(br)
		}
		if ps, err := ReadProc(ag.pid()); err == nil {
			s.RSS, s.Anon = ps.RSS, ps.Anon
		}
		mu.Lock()
		if !downAt.IsZero() && drainEnd.IsZero() {
			res.OutageRSS = max(res.OutageRSS, s.RSS)
			res.OutageAnon = max(res.OutageAnon, s.Anon)
		}
		mu.Unlock()
		res.PeakBacklogBytes = max(res.PeakBacklogBytes, s.BacklogBytes)
		res.PeakBacklogRecords = max(res.PeakBacklogRecords, s.BacklogRecords)
		if s.Delivered != prev.Delivered {
			lastMove = time.Now()
		}
		if s.T-prev.T >= 0.2 || len(res.Samples) == 0 {
			res.Samples = append(res.Samples, s)
			prev = s
		}
		if loadEnded && brokerUp && (s.Delivered >= expected || time.Since(lastMove) > b.cfg.Settle+5*time.Second) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	res.DownAt = downAt.Sub(start).Seconds()
	res.UpAt = upAt.Sub(start).Seconds()
	if !drainEnd.IsZero() && !upAt.IsZero() {
		res.DrainSeconds = drainEnd.Sub(upAt).Seconds()
		if !resumeAt.IsZero() {
			res.ResumeSeconds = resumeAt.Sub(upAt).Seconds()
		}
		if res.DrainSeconds > 0 && endDelivered > upDelivered {
			res.DrainRate = float64(endDelivered-upDelivered) / res.DrainSeconds
			res.DrainRatio = res.DrainRate / o.Rate
		}
	}
	if ps, err := ReadProc(ag.pid()); err == nil {
		res.PeakRSS = ps.HWM
	}
	res.Counts, res.Latency, _, _ = tr.Result()
	return res, nil
}
