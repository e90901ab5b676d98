package serial

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/creack/pty"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/wait"
)

// fakeDevice is a pty pair behind a stable symlink, like the
// /dev/serial/by-id/ name of a USB adapter: the source opens the link, the
// test writes to the master side, and can unplug it (close) and plug a new
// one in (a new pty, the link moved to it).
type fakeDevice struct {
	t             *testing.T
	link          string
	master, slave *os.File
}

func newDevice(t *testing.T) *fakeDevice {
	d := &fakeDevice{t: t, link: filepath.Join(t.TempDir(), "usb-sensor")}
	d.plug()
	t.Cleanup(d.unplug)
	return d
}

func (d *fakeDevice) plug() {
	m, s, err := pty.Open()
	if err != nil {
		d.t.Fatalf("pty: %v", err)
	}
	d.master, d.slave = m, s
	_ = os.Remove(d.link)
	if err := os.Symlink(s.Name(), d.link); err != nil {
		d.t.Fatal(err)
	}
}

func (d *fakeDevice) unplug() {
	if d.master != nil {
		d.master.Close()
		d.slave.Close()
		d.master, d.slave = nil, nil
	}
	_ = os.Remove(d.link)
}

func (d *fakeDevice) write(b []byte) {
	if _, err := d.master.Write(b); err != nil {
		d.t.Fatalf("write to pty: %v", err)
	}
}

func ptySource(t *testing.T, d *fakeDevice, edit func(*Config)) (*Source, *runner.Metrics) {
	t.Helper()
	cfg := *Defaults()
	cfg.Device = d.link
	cfg.Baud = 115200
	cfg.Reconnect = ReconnectConfig{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	if edit != nil {
		edit(&cfg)
	}
	m := runner.NewMetrics()
	s := New(cfg, agent.Env{Pipeline: "p", Component: "serial", Metrics: m})
	if err := s.Connect(context.Background()); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, m
}

// readFrames reads until n frames arrived, acking each batch.
func readFrames(t *testing.T, s *Source, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []string
	for len(out) < n {
		recs, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("read after %q: %v", out, err)
		}
		for _, r := range recs {
			if r.RecvTime == 0 {
				t.Errorf("frame %q has no receive time", r.Raw)
			}
			out = append(out, string(r.Raw))
		}
		ack(ctx, nil)
	}
	return out
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

func TestPtyLineFramingBadInput(t *testing.T) {
	d := newDevice(t)
	s, m := ptySource(t, d, func(c *Config) { c.MaxFrame = 32 })
	d.write([]byte("t1,21.5\r\n\x00\x00garbage\x01\n\xff\xfe\xc3(\n"))
	d.write([]byte(strings.Repeat("overlong line ", 20) + "\nt2,22.0\n"))
	got := readFrames(t, s, 4)
	want := []string{"t1,21.5", "\x00\x00garbage\x01", "\xff\xfe\xc3(", "t2,22.0"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if c := counter(m, `pspf_serial_dropped_total{pipeline="p",component="serial",reason="oversize"}`); c != "1" {
		t.Errorf("got oversize %q, want 1", c)
	}
}

func TestPtyFixedAndLengthPrefix(t *testing.T) {
	t.Run("fixed", func(t *testing.T) {
		d := newDevice(t)
		s, _ := ptySource(t, d, func(c *Config) { c.Framing, c.FrameSize = "fixed", 4 })
		d.write([]byte("abcd\x00\x01\x02\x03wxyz"))
		if got, want := readFrames(t, s, 3), []string{"abcd", "\x00\x01\x02\x03", "wxyz"}; !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("length_prefix", func(t *testing.T) {
		d := newDevice(t)
		s, m := ptySource(t, d, func(c *Config) {
			c.Framing, c.LengthBytes, c.LengthEndian, c.MaxFrame = "length_prefix", 2, "little", 8
		})
		var in []byte
		for _, body := range []string{"one", "much too long for max", "\xff\x00two"} {
			in = binary.LittleEndian.AppendUint16(in, uint16(len(body)))
			in = append(in, body...)
		}
		d.write(in)
		if got, want := readFrames(t, s, 2), []string{"one", "\xff\x00two"}; !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
		if c := counter(m, `pspf_serial_dropped_total{pipeline="p",component="serial",reason="oversize"}`); c != "1" {
			t.Errorf("got oversize %q, want 1", c)
		}
	})
}

// TestPtyUnplugAndReplug: the device disappears with a line half sent and a
// new one appears under the same name; the source reopens it by itself.
func TestPtyUnplugAndReplug(t *testing.T) {
	d := newDevice(t)
	s, m := ptySource(t, d, nil)
	d.write([]byte("before\nno end"))
	if got := readFrames(t, s, 1); got[0] != "before" {
		t.Fatalf("got %q, want before", got)
	}
	d.unplug()
	got := make(chan []string, 1)
	go func() { got <- readFrames(t, s, 1) }()
	// The source sees the device gone while it is away, then opens the new one.
	wait.For(t, 5*time.Second, "the device counted as lost", func() bool { return counter(m, "pspf_serial_device_lost_total") == "1" })
	d.plug()
	// Write only once the source has the new device open in raw mode.
	wait.For(t, 5*time.Second, "the source to reopen the device", func() bool { return counter(m, "pspf_serial_reconnects_total") == "1" })
	d.write([]byte("after\n"))
	select {
	case g := <-got:
		if g[0] != "after" {
			t.Errorf("got %q, want after", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no frame after replug")
	}
	if c := counter(m, "pspf_serial_device_lost_total"); c != "1" {
		t.Errorf("got device lost %q, want 1", c)
	}
	if c := counter(m, `pspf_serial_dropped_total{pipeline="p",component="serial",reason="incomplete"}`); c != "1" {
		t.Errorf("got incomplete %q, want 1 (the line with no end)", c)
	}
}

func TestPtyPollCommand(t *testing.T) {
	d := newDevice(t)
	s, _ := ptySource(t, d, func(c *Config) { c.Poll = PollConfig{Command: "READ\r\n", Interval: 30 * time.Millisecond} })
	go func() { // the sensor answers each command
		buf := make([]byte, 64)
		for i := 0; i < 3; i++ {
			n, err := d.master.Read(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "READ\r\n" {
				_, _ = d.master.Write([]byte("21.5\r\n"))
			}
		}
	}()
	if got := readFrames(t, s, 2); got[0] != "21.5" || got[1] != "21.5" {
		t.Errorf("got %q, want two answers", got)
	}
}

func TestPtyNackRedelivers(t *testing.T) {
	d := newDevice(t)
	s, _ := ptySource(t, d, nil)
	d.write([]byte("x\n"))
	ctx := context.Background()
	recs, ack, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ack(ctx, errors.New("log full"))
	again, ack2, err := s.Read(ctx)
	if err != nil || len(again) != len(recs) || string(again[0].Raw) != "x" {
		t.Fatalf("got %v, %v; want the nacked batch again", again, err)
	}
	ack2(ctx, nil)
}

func TestMissingDeviceIsAConnectError(t *testing.T) {
	cfg := *Defaults()
	cfg.Device = filepath.Join(t.TempDir(), "nope")
	err := New(cfg, agent.Env{}).Connect(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "serial source: open ") {
		t.Errorf("got %v, want an open error", err)
	}
}

// TestPtyBatchBytesBound: large frames end a batch at batch_bytes, not
// only at batch_size, and a batch's frames share one array, so the frames
// held for unacked batches stay below max_unacked × (batch_bytes +
// max_frame); every frame arrives once, in order.
func TestPtyBatchBytesBound(t *testing.T) {
	d := newDevice(t)
	s, _ := ptySource(t, d, func(c *Config) {
		c.MaxFrame = 1 << 10
		c.BatchSize = 100
		c.BatchBytes = 8 << 10
		c.Linger = time.Second
	})
	const n = 300
	want := make([]string, n)
	var stream []byte
	for i := range want {
		want[i] = fmt.Sprintf("frame-%04d-%s", i, strings.Repeat("x", 900))
		stream = append(stream, want[i]+"\n"...)
	}
	werr := make(chan error, 1)
	go func() { _, err := d.master.Write(stream); werr <- err }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		recs, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d frames: %v", len(got), err)
		}
		bytes := 0
		for i, r := range recs {
			// One array per batch, frames end to end: no array the batch
			// outgrew stays alive behind its first frames.
			if i > 0 && unsafe.Pointer(unsafe.SliceData(r.Raw)) != unsafe.Add(unsafe.Pointer(unsafe.SliceData(recs[0].Raw)), bytes) {
				t.Fatalf("batch of %d frames: frame %d is not in the batch's one array", len(recs), i)
			}
			bytes += len(r.Raw)
			got = append(got, string(r.Raw))
		}
		if limit := int(8<<10 + 1<<10); bytes > limit {
			t.Fatalf("a batch of %d frames holds %d bytes, over batch_bytes + max_frame = %d", len(recs), bytes, limit)
		}
		ack(ctx, nil)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("frames differ: got %d, want %d in order", len(got), len(want))
	}
}
