// Package simulate is a source of simulated sensor readings: N sensors, a
// rate, a value shape and a seed. The same seed gives the same readings in the
// same order, whatever the machine's speed: values depend on the reading's
// sequence number, not on the clock. It feeds the demo and the benchmarks.
package simulate

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the simulate source's config.
type Config struct {
	Sensors    int           `yaml:"sensors" min:"1" max:"1000000" doc:"number of simulated sensors"`
	Rate       float64       `yaml:"rate" min:">0" doc:"readings per second, per sensor"`
	Shape      string        `yaml:"shape" enum:"steady,sine,random_walk,spikes,dropouts" doc:"how values move over time"`
	Seed       uint64        `yaml:"seed" doc:"random seed; the same seed gives the same readings"`
	Count      int64         `yaml:"count" min:"0" doc:"stop after this many readings in all; 0 runs forever"`
	Format     string        `yaml:"format" enum:"json,fields" doc:"json emits raw JSON payloads for a decode operator; fields emits decoded records"`
	Field      string        `yaml:"field" required:"true" doc:"name of the value field"`
	Base       float64       `yaml:"base" doc:"the value around which readings move"`
	Amplitude  float64       `yaml:"amplitude" doc:"how far readings move from base"`
	Period     time.Duration `yaml:"period" min:">0" doc:"period of the sine shape"`
	Batch      int           `yaml:"batch" min:"1" max:"65536" doc:"most readings per batch"`
	Prefix     string        `yaml:"prefix" doc:"sensor names are prefix + number"`
	MaxUnacked int           `yaml:"max_unacked" min:"1" doc:"batches read but not yet acked before Read blocks (backpressure)"`
}

// Defaults returns the config's defaults.
func Defaults() *Config {
	return &Config{Sensors: 3, Rate: 1, Shape: "sine", Seed: 1, Format: "json", Field: "temp",
		Base: 21, Amplitude: 4, Period: time.Minute, Batch: 256, Prefix: "sensor-", MaxUnacked: 8}
}

// Factory returns the registry entry of the simulate source.
func Factory() agent.Factory[agent.Source] {
	return agent.Typed[agent.Source]("simulated sensors: shapes, rate and seed; deterministic", Defaults, func(c *Config, env agent.Env) (agent.Source, error) {
		return New(*c, env), nil
	})
}

// Source produces simulated readings. Build it with New.
type Source struct {
	cfg   Config
	env   agent.Env
	rng   *rand.Rand
	walk  []float64
	seq   int64 // readings produced so far
	start time.Time
	// unacked bounds the unacked batches; a nacked batch is queued for redelivery.
	unacked *agent.Unacked
	buf     []byte
	mu      sync.Mutex
	closed  bool
}

// New returns a simulate source. It starts no goroutines.
func New(cfg Config, env agent.Env) *Source {
	env = env.WithDefaults()
	s := &Source{cfg: cfg, env: env, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		walk: make([]float64, cfg.Sensors)}
	for i := range s.walk {
		s.walk[i] = cfg.Base
	}
	s.unacked = agent.NewUnacked(cfg.MaxUnacked, env.Counter("pspf_simulate_redelivered_total"))
	return s
}

// Connect records the start time; readings are paced from it.
func (s *Source) Connect(context.Context) error {
	s.start = s.env.Now()
	return nil
}

// Read returns the readings that are due, waiting for the next one if none is.
// It blocks while MaxUnacked batches are unacked. After Count readings it
// returns io.EOF once every batch has been acked.
func (s *Source) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	if b, ack, err := s.unacked.Acquire(ctx); b != nil || err != nil {
		return b, ack, err
	}
	total := float64(s.cfg.Sensors) * s.cfg.Rate
	for {
		if s.cfg.Count > 0 && s.seq >= s.cfg.Count {
			s.unacked.Release()
			// Finite: wait for outstanding batches, redeliver nacked ones.
			b, ack, err := s.unacked.Drain(ctx)
			if b == nil && err == nil {
				err = io.EOF
			}
			return b, ack, err
		}
		due := int64(s.env.Now().Sub(s.start).Seconds()*total) + 1
		if s.cfg.Count > 0 && due > s.cfg.Count {
			due = s.cfg.Count
		}
		if n := min(due-s.seq, int64(s.cfg.Batch)); n > 0 {
			b := s.make(int(n))
			return b, s.unacked.Ack(b), nil
		}
		next := s.start.Add(time.Duration(float64(s.seq) / total * float64(time.Second)))
		wait := next.Sub(s.env.Now())
		if !agent.Sleep(ctx, max(wait, 100*time.Microsecond)) {
			s.unacked.Release()
			return nil, nil, ctx.Err()
		}
	}
}

// make produces the next n readings, sensor by sensor in turn.
func (s *Source) make(n int) []agent.Record {
	out := make([]agent.Record, n)
	interval := time.Duration(float64(time.Second) / (float64(s.cfg.Sensors) * s.cfg.Rate))
	for i := range out {
		seq := s.seq
		s.seq++
		sensor := int(seq % int64(s.cfg.Sensors))
		at := s.start.Add(time.Duration(seq) * interval)
		v, ok := s.value(sensor, seq, at)
		name := s.cfg.Prefix + strconv.Itoa(sensor+1)
		r := &out[i]
		r.Source = s.env.Component
		r.RecvTime = at.UnixNano()
		if !ok { // a dropout: the sensor sends an empty reading
			r.Raw = []byte(`{"sensor":"` + name + `","seq":` + strconv.FormatInt(seq, 10) + `}`)
			if s.cfg.Format == "fields" {
				r.Raw = nil
				r.Fields = []agent.Field{agent.String("sensor", name), agent.Int("seq", seq)}
			}
			continue
		}
		if s.cfg.Format == "fields" {
			r.EventTime = at.UnixNano()
			r.Fields = []agent.Field{agent.String("sensor", name), agent.Int("seq", seq), agent.Float(s.cfg.Field, v), agent.Int("ts", at.UnixMilli())}
			continue
		}
		b := s.buf[:0]
		b = append(b, `{"sensor":"`...)
		b = append(b, name...)
		b = append(b, `","seq":`...)
		b = strconv.AppendInt(b, seq, 10)
		b = append(b, `,"`...)
		b = append(b, s.cfg.Field...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, v, 'f', 2, 64)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, at.UnixMilli(), 10)
		b = append(b, '}')
		s.buf = b
		r.Raw = append([]byte(nil), b...)
	}
	return out
}

// value is the reading of sensor at seq; ok is false for a dropout. It uses
// the seeded generator in sequence order, so a run is reproducible.
func (s *Source) value(sensor int, seq int64, at time.Time) (float64, bool) {
	c := &s.cfg
	noise := s.rng.NormFloat64() * c.Amplitude * 0.02
	phase := 2 * math.Pi * float64(sensor) / float64(c.Sensors)
	elapsed := at.Sub(s.start).Seconds()
	switch c.Shape {
	case "steady":
		return round2(c.Base + noise), true
	case "sine":
		return round2(c.Base + c.Amplitude*math.Sin(2*math.Pi*elapsed/c.Period.Seconds()+phase) + noise), true
	case "random_walk":
		s.walk[sensor] += s.rng.NormFloat64() * c.Amplitude * 0.05
		return round2(s.walk[sensor]), true
	case "spikes":
		if s.rng.Float64() < 0.01 {
			return round2(c.Base + c.Amplitude*10*(1+s.rng.Float64())), true
		}
		return round2(c.Base + noise), true
	case "dropouts":
		// Each sensor is silent for one tenth of every period.
		pos := math.Mod(elapsed/c.Period.Seconds()+float64(sensor)/float64(c.Sensors), 1)
		if pos < 0.1 {
			return 0, false
		}
		return round2(c.Base + noise), true
	}
	return c.Base, true
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// Close ends the source. Unacked batches are forgotten: simulated readings
// need no redelivery across restarts.
func (s *Source) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return nil
}

var _ agent.Source = (*Source)(nil)
