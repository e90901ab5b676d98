package gpio

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/host/v3/gpioioctl"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/wait"
)

// testPins hands out gpiotest pins by name.
type testPins map[string]*gpiotest.Pin

func (tp testPins) lookup(p PinConfig) (pgpio.PinIO, error) {
	if pin, ok := tp[p.Name]; ok {
		return pin, nil
	}
	return nil, fmt.Errorf("no GPIO line named %q", p.Name)
}

func newPin(name string) *gpiotest.Pin {
	return &gpiotest.Pin{N: name, EdgesChan: make(chan pgpio.Level, 64)}
}

func start(t *testing.T, pins testPins, pcs ...PinConfig) (*Source, *runner.Metrics) {
	t.Helper()
	cfg := *Defaults()
	cfg.Pins = pcs
	m := runner.NewMetrics()
	s := newSource(cfg, agent.Env{Pipeline: "p", Component: "gpio", Metrics: m}, pins.lookup)
	if err := s.Connect(context.Background()); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, m
}

// next reads records until n arrived.
func next(t *testing.T, s *Source, n int) []agent.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []agent.Record
	for len(out) < n {
		recs, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, recs...)
		ack(ctx, nil)
	}
	return out
}

func describe(r agent.Record) string {
	var b strings.Builder
	b.WriteString(r.Key)
	for _, f := range r.Fields[1:] {
		b.WriteByte(' ')
		b.WriteString(f.Name)
		b.WriteByte('=')
		b.Write(f.AppendText(nil))
	}
	return b.String()
}

func counter(m *runner.Metrics, name string) string {
	var b strings.Builder
	m.WritePrometheus(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, name) {
			return l[strings.LastIndexByte(l, ' ')+1:]
		}
	}
	return ""
}

func TestEdges(t *testing.T) {
	for _, tt := range []struct {
		edge string
		want []string
	}{
		{"both", []string{"door value=1 edge=rising", "door value=0 edge=falling", "door value=1 edge=rising"}},
		{"rising", []string{"door value=1 edge=rising", "door value=1 edge=rising"}},
		{"falling", []string{"door value=0 edge=falling"}},
	} {
		t.Run(tt.edge, func(t *testing.T) {
			pin := newPin("GPIO17")
			s, _ := start(t, testPins{"GPIO17": pin}, PinConfig{Name: "GPIO17", Alias: "door", Mode: "edge", Edge: tt.edge})
			for _, l := range []pgpio.Level{pgpio.High, pgpio.Low, pgpio.High} {
				pin.EdgesChan <- l
			}
			recs := next(t, s, len(tt.want))
			for i, r := range recs {
				if got := describe(r); got != tt.want[i] {
					t.Errorf("record %d: got %q, want %q", i, got, tt.want[i])
				}
				if r.EventTime == 0 || r.Key != "door" {
					t.Errorf("record %d: got time %d key %q, want a time and key door", i, r.EventTime, r.Key)
				}
			}
		})
	}
}

// TestDebounce: a chattering contact makes one record with the level it
// settles at; a bounce that ends where it started makes none.
func TestDebounce(t *testing.T) {
	pin := newPin("GPIO5")
	s, m := start(t, testPins{"GPIO5": pin}, PinConfig{Name: "GPIO5", Mode: "edge", Edge: "both", Debounce: 30 * time.Millisecond})
	for _, l := range []pgpio.Level{pgpio.High, pgpio.Low, pgpio.High, pgpio.Low, pgpio.High} { // chatter, settles high
		pin.EdgesChan <- l
	}
	recs := next(t, s, 1)
	if got := describe(recs[0]); got != "GPIO5 value=1 edge=rising" {
		t.Errorf("got %q, want one rising edge", got)
	}
	// The record came after the chatter's debounce ended: the glitch is an
	// episode of its own.
	pin.EdgesChan <- pgpio.Low // a glitch back to where it was
	pin.EdgesChan <- pgpio.High
	wait.For(t, 2*time.Second, "the glitch counted as debounced", func() bool {
		return counter(m, `pspf_gpio_dropped_total{pipeline="p",component="gpio",reason="debounced"}`) == "1"
	})
	pin.EdgesChan <- pgpio.Low
	if got := describe(next(t, s, 1)[0]); got != "GPIO5 value=0 edge=falling" {
		t.Errorf("got %q, want the falling edge after the glitch", got)
	}
}

func TestCounter(t *testing.T) {
	pin := newPin("FLOW")
	s, _ := start(t, testPins{"FLOW": pin}, PinConfig{Name: "FLOW", Mode: "counter", Edge: "rising", Interval: 200 * time.Millisecond})
	for range 25 {
		pin.EdgesChan <- pgpio.High
	}
	total := int64(0)
	for total < 25 {
		r := next(t, s, 1)[0]
		f := r.Field("count")
		if f == nil || r.Field("per_second") == nil || r.Field("interval_ms") == nil {
			t.Fatalf("got %q, want count, per_second and interval_ms", describe(r))
		}
		total += f.Int
	}
	if total != 25 {
		t.Errorf("got %d pulses, want 25", total)
	}
}

func TestCounterDebounce(t *testing.T) {
	pin := newPin("WIND")
	s, m := start(t, testPins{"WIND": pin}, PinConfig{Name: "WIND", Mode: "counter", Debounce: time.Second, Interval: 100 * time.Millisecond})
	for range 10 { // one pulse and its nine bounces
		pin.EdgesChan <- pgpio.High
	}
	r := next(t, s, 1)[0]
	for r.Field("count").Int == 0 {
		r = next(t, s, 1)[0]
	}
	if r.Field("count").Int != 1 {
		t.Errorf("got count %d, want 1", r.Field("count").Int)
	}
	if got := counter(m, `pspf_gpio_dropped_total{pipeline="p",component="gpio",reason="debounced"}`); got != "9" {
		t.Errorf("got %s debounced, want 9", got)
	}
}

func TestLevelPolling(t *testing.T) {
	pin := newPin("GPIO22")
	pin.L = pgpio.High
	s, _ := start(t, testPins{"GPIO22": pin}, PinConfig{Name: "GPIO22", Mode: "level", Interval: 20 * time.Millisecond, Pull: "none"})
	if got := describe(next(t, s, 1)[0]); got != "GPIO22 value=1" {
		t.Errorf("got %q, want value=1", got)
	}
	pin.Lock()
	pin.L = pgpio.Low
	pin.Unlock()
	// Records polled before the change may still be queued: the new level
	// shows in a later one.
	var got string
	if !wait.Until(5*time.Second, func() bool {
		recs := next(t, s, 1)
		got = describe(recs[len(recs)-1])
		return got == "GPIO22 value=0"
	}) {
		t.Errorf("got %q, want value=0", got)
	}
	if pin.P != pgpio.PullNoChange {
		t.Errorf("got pull %v, want it left unchanged", pin.P)
	}
}

func TestPullIsApplied(t *testing.T) {
	pin := newPin("BTN")
	start(t, testPins{"BTN": pin}, PinConfig{Name: "BTN", Pull: "up"})
	if pin.P != pgpio.PullUp {
		t.Errorf("got pull %v, want up", pin.P)
	}
}

func TestNackRedelivers(t *testing.T) {
	pin := newPin("GPIO1")
	s, _ := start(t, testPins{"GPIO1": pin}, PinConfig{Name: "GPIO1"})
	pin.EdgesChan <- pgpio.High
	ctx := context.Background()
	recs, ack, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ack(ctx, errors.New("log full"))
	again, ack2, err := s.Read(ctx)
	if err != nil || len(again) != len(recs) || describe(again[0]) != describe(recs[0]) {
		t.Fatalf("got %v, %v; want the nacked batch again", again, err)
	}
	ack2(ctx, nil)
}

func TestMissingPin(t *testing.T) {
	cfg := *Defaults()
	cfg.Pins = []PinConfig{{Name: "GPIO17"}, {Name: "NOPE"}}
	s := newSource(cfg, agent.Env{}, testPins{"GPIO17": newPin("GPIO17")}.lookup)
	err := s.Connect(context.Background())
	if err == nil || err.Error() != `gpio source: pin "NOPE": no GPIO line named "NOPE"` {
		t.Errorf("got %v, want a clear error naming the pin", err)
	}
	_ = s.Close(context.Background())
}

// TestMissingPinHost goes through periph's real host drivers: on a machine
// without the pin (this one has no GPIO chip at all) Connect says so.
func TestMissingPinHost(t *testing.T) {
	cfg := *Defaults()
	cfg.Pins = []PinConfig{{Name: "PSPF_NO_SUCH_LINE"}}
	s := New(cfg, agent.Env{})
	err := s.Connect(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), `gpio source: pin "PSPF_NO_SUCH_LINE": `) {
		t.Errorf("got %v, want an error naming the pin", err)
	}
	t.Logf("host lookup error: %v", err)
	_ = s.Close(context.Background())
}

// TestPeriphEdgeAPIHasNoTimestamp is a tripwire for the README's Timing
// section: periph's edge API (the PinIn interface, the gpioioctl driver's
// line and line set, the gpiotest pin) reports that an edge came but not
// when, so the source debounces by wake-up time. When an upgrade of periph
// adds a method or result that carries the kernel's event time, this fails:
// use it for debounce and event times, and update the README.
func TestPeriphEdgeAPIHasNoTimestamp(t *testing.T) {
	timeType := reflect.TypeFor[time.Time]()
	carriesTime := func(ty reflect.Type) bool {
		for ty.Kind() == reflect.Pointer {
			ty = ty.Elem()
		}
		if ty == timeType {
			return true
		}
		if ty.Kind() == reflect.Struct {
			for f := range ty.Fields() {
				if f.Type == timeType || strings.Contains(strings.ToLower(f.Name), "stamp") || strings.Contains(strings.ToLower(f.Name), "time") {
					return true
				}
			}
		}
		return false
	}
	for _, ty := range []reflect.Type{
		reflect.TypeFor[pgpio.PinIn](),
		reflect.TypeFor[*gpioioctl.GPIOLine](),
		reflect.TypeFor[*gpioioctl.LineSet](),
		reflect.TypeFor[*gpiotest.Pin](),
	} {
		if ty.NumMethod() == 0 {
			t.Fatalf("%v has no methods: the check looks at nothing", ty)
		}
		for m := range ty.Methods() {
			name := strings.ToLower(m.Name)
			if strings.Contains(name, "stamp") || strings.Contains(name, "event") || strings.Contains(name, "time") {
				t.Errorf("%v.%s: periph may now give edge times; use them (README, Timing)", ty, m.Name)
			}
			for out := range m.Type.Outs() {
				if carriesTime(out) {
					t.Errorf("%v.%s returns %v: periph may now give edge times; use them (README, Timing)", ty, m.Name, out)
				}
			}
		}
	}
}
