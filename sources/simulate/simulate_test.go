package simulate

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/sinks/console"
)

// fakeClock advances by step on every call, so that readings are due at once.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Unix(1_700_000_000, 0)
	return func() time.Time { t = t.Add(step); return t }
}

func readAll(t *testing.T, cfg Config) []agent.Record {
	t.Helper()
	s := New(cfg, agent.Env{Component: "simulate", Now: fakeClock(time.Second)})
	ctx := context.Background()
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	var out []agent.Record
	for {
		recs, ack, err := s.Read(ctx)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, recs...)
		ack(ctx, nil)
	}
}

func TestDeterministicForASeed(t *testing.T) {
	for _, shape := range []string{"steady", "sine", "random_walk", "spikes", "dropouts"} {
		t.Run(shape, func(t *testing.T) {
			cfg := *Defaults()
			cfg.Shape, cfg.Count, cfg.Seed, cfg.Sensors, cfg.Rate = shape, 500, 7, 5, 10
			a, b := readAll(t, cfg), readAll(t, cfg)
			if len(a) != 500 || len(b) != 500 {
				t.Fatalf("got %d and %d readings, want 500", len(a), len(b))
			}
			for i := range a {
				if string(a[i].Raw) != string(b[i].Raw) {
					t.Fatalf("reading %d: got %s and %s, want the same", i, a[i].Raw, b[i].Raw)
				}
			}
			cfg.Seed = 8
			c := readAll(t, cfg)
			same := 0
			for i := range a {
				if string(a[i].Raw) == string(c[i].Raw) {
					same++
				}
			}
			if shape != "dropouts" && same == len(a) {
				t.Errorf("another seed gave the same %d readings", same)
			}
		})
	}
}

func TestFieldsFormatAndShapes(t *testing.T) {
	cfg := *Defaults()
	cfg.Format, cfg.Count, cfg.Sensors, cfg.Shape = "fields", 100, 4, "spikes"
	recs := readAll(t, cfg)
	sensors := map[string]int{}
	for _, r := range recs {
		s := r.Field("sensor")
		v := r.Field("temp")
		if s == nil || v == nil {
			t.Fatalf("got %+v, want sensor and temp fields", r.Fields)
		}
		sensors[s.Str]++
	}
	if len(sensors) != 4 {
		t.Errorf("got %d sensors, want 4", len(sensors))
	}
	for name, n := range sensors {
		if n != 25 {
			t.Errorf("sensor %s: got %d readings, want 25", name, n)
		}
	}
}

func TestDropoutsHaveNoValue(t *testing.T) {
	cfg := *Defaults()
	cfg.Format, cfg.Count, cfg.Shape, cfg.Period, cfg.Rate = "fields", 1000, "dropouts", 10*time.Second, 10
	missing := 0
	for _, r := range readAll(t, cfg) {
		if r.Field("temp") == nil {
			missing++
		}
	}
	if missing < 50 || missing > 150 {
		t.Errorf("got %d readings without a value, want about a tenth of 1000", missing)
	}
}

func TestNackedBatchIsRedelivered(t *testing.T) {
	cfg := *Defaults()
	cfg.Count, cfg.Batch = 10, 10
	s := New(cfg, agent.Env{Now: fakeClock(time.Minute)})
	ctx := context.Background()
	s.Connect(ctx)
	first, ack, err := s.Read(ctx)
	if err != nil || len(first) != 10 {
		t.Fatalf("got %d records, %v; want 10", len(first), err)
	}
	ack(ctx, errors.New("log full"))
	again, ack2, err := s.Read(ctx)
	if err != nil || len(again) != 10 || string(again[0].Raw) != string(first[0].Raw) {
		t.Fatalf("got %d records (%v), want the same 10 again", len(again), err)
	}
	ack2(ctx, nil)
	if _, _, err := s.Read(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("got %v, want io.EOF", err)
	}
}

func TestBackpressureBlocksRead(t *testing.T) {
	cfg := *Defaults()
	cfg.MaxUnacked, cfg.Batch = 2, 1
	s := New(cfg, agent.Env{Now: fakeClock(time.Minute)})
	s.Connect(context.Background())
	for range 2 {
		if _, _, err := s.Read(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := s.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want Read to block until the deadline with 2 batches unacked", err)
	}
}

func TestREADMESample(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = Factory()
	reg.Sinks["console"] = console.Factory()
	specs := agenttest.CheckREADMESamples(t, "README.md", reg)
	if len(specs) != 1 {
		t.Fatalf("got %d samples, want 1", len(specs))
	}
	if c := specs[0].Sources[0].Config.(*Config); c.Seed != 42 || c.Sensors != 4 {
		t.Errorf("got %+v, want the sample's seed 42 and 4 sensors", c)
	}
}
