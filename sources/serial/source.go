// Package serial is a source that reads frames from a serial port (RS-232,
// RS-485 adapters, USB serial): lines, fixed-size frames or length-prefixed
// frames, each with its receive time, the bytes in Record.Raw for a decode
// operator. It survives the device going away (a USB adapter unplugged) by
// reopening it with backoff.
//
// A serial line has no acknowledgements: bytes not read in time are lost in
// the UART or the kernel's buffer, and frames read but not yet durable are
// lost if the agent dies. A batch the runner could not make durable (a nack)
// is kept in memory and handed out again.
package serial

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	bugserial "go.bug.st/serial"

	"github.com/pspf/pspf-edge/agent"
)

// port is what the source needs of an open serial port; go.bug.st/serial's
// Port has it, and tests use a pty.
type port interface {
	io.ReadWriteCloser
	// SetReadTimeout makes Read return (0, nil) after t without data.
	SetReadTimeout(t time.Duration) error
}

// openFunc opens the device.
type openFunc func(path string, mode *bugserial.Mode) (port, error)

func openDevice(path string, mode *bugserial.Mode) (port, error) {
	p, err := bugserial.Open(path, mode)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Source is the serial source. Build it with New.
type Source struct {
	cfg  Config
	env  agent.Env
	log  *slog.Logger
	open openFunc
	mode bugserial.Mode

	// Only Read's goroutine (and Close, after the last Read) use these.
	p        port
	framer   Framer
	nextPoll time.Time
	bo       agent.Backoff

	unacked *agent.Unacked // one slot per unacked batch; nacked ones are handed out again
	mu      sync.Mutex
	closed  bool

	frames, oversize, incomplete, reconnects, lost *agent.Counter
}

// New returns a serial source; Connect opens the device. It starts no goroutines.
func New(cfg Config, env agent.Env) *Source { return newSource(cfg, env, openDevice) }

func newSource(cfg Config, env agent.Env, open openFunc) *Source {
	env = env.WithDefaults()
	s := &Source{cfg: cfg, env: env, log: env.Logger, open: open,
		unacked: agent.NewUnacked(cfg.MaxUnacked, env.Counter("pspf_serial_redelivered_total")),
		bo:      agent.Backoff{Initial: cfg.Reconnect.Initial, Max: cfg.Reconnect.Max}}
	s.mode = bugserial.Mode{BaudRate: cfg.Baud, DataBits: cfg.DataBits}
	s.mode.Parity = map[string]bugserial.Parity{"none": bugserial.NoParity, "odd": bugserial.OddParity,
		"even": bugserial.EvenParity, "mark": bugserial.MarkParity, "space": bugserial.SpaceParity}[cfg.Parity]
	s.mode.StopBits = map[string]bugserial.StopBits{"1": bugserial.OneStopBit, "1.5": bugserial.OnePointFiveStopBits,
		"2": bugserial.TwoStopBits}[cfg.StopBits]
	s.frames = env.Counter("pspf_serial_frames_total")
	s.oversize = env.Counter("pspf_serial_dropped_total", "reason", "oversize")
	s.incomplete = env.Counter("pspf_serial_dropped_total", "reason", "incomplete")
	s.lost = env.Counter("pspf_serial_device_lost_total")
	s.reconnects = env.Counter("pspf_serial_reconnects_total")
	return s
}

// Connect opens the device. A device that is missing or busy is an error;
// the runner retries with backoff.
func (s *Source) Connect(context.Context) error {
	if err := s.openPort(); err != nil {
		return err
	}
	s.log.Info("serial source opened", "device", s.cfg.Device, "baud", s.cfg.Baud, "framing", s.cfg.Framing)
	return nil
}

func (s *Source) openPort() error {
	p, err := s.open(s.cfg.Device, &s.mode)
	if err != nil {
		return fmt.Errorf("serial source: open %s: %w", s.cfg.Device, err)
	}
	// Read returns at least this often without data, so that linger,
	// polling and ctx are served while the line is quiet.
	if err := p.SetReadTimeout(min(max(s.cfg.Linger, 5*time.Millisecond), 50*time.Millisecond)); err != nil {
		p.Close()
		return fmt.Errorf("serial source: %s: set read timeout: %w", s.cfg.Device, err)
	}
	s.p = p
	s.framer = s.newFramer(p)
	s.nextPoll = time.Time{}
	return nil
}

func (s *Source) newFramer(r io.Reader) Framer {
	max := int(s.cfg.MaxFrame)
	switch s.cfg.Framing {
	case "fixed":
		return NewFixedFramer(r, s.cfg.FrameSize)
	case "length_prefix":
		var order binary.ByteOrder = binary.BigEndian
		if s.cfg.LengthEndian == "little" {
			order = binary.LittleEndian
		}
		return NewLengthPrefixFramer(r, s.cfg.LengthBytes, order, max)
	}
	return NewLineFramer(r, []byte(s.cfg.Delimiter), max)
}

// Read returns the next batch of frames: it waits for a first frame, then
// gathers more for up to linger, batch_size frames or batch_bytes. It blocks
// while max_unacked batches are unacked (the device's bytes then wait in the
// kernel's buffer, and are lost if it overflows). If the device goes away, Read logs it,
// returns what it has, and reopens the device with backoff on the next calls.
func (s *Source) Read(ctx context.Context) ([]agent.Record, agent.AckFunc, error) {
	if b, ack, err := s.unacked.Acquire(ctx); b != nil || err != nil {
		return b, ack, err
	}
	var recs []agent.Record
	var arena []byte
	var deadline time.Time
	for {
		if ctx.Err() != nil {
			if len(recs) > 0 {
				return recs, s.unacked.Ack(recs), nil
			}
			s.unacked.Release()
			return nil, nil, ctx.Err()
		}
		if s.p == nil {
			s.reopen(ctx)
			continue
		}
		if err := s.poll(); err != nil {
			s.deviceLost(err)
			continue
		}
		frame, err := s.framer.Next()
		now := s.env.Now()
		switch {
		case err == nil && frame != nil:
			if s.cfg.TrimCR && s.cfg.Framing == "line" && len(frame) > 0 && frame[len(frame)-1] == '\r' {
				frame = frame[:len(frame)-1]
			}
			// Frames alias the framer's buffer: copy them into the batch's arena.
			arena = growArena(arena, recs, len(frame), int(s.cfg.BatchBytes)+int(s.cfg.MaxFrame))
			off := len(arena)
			arena = append(arena, frame...)
			recs = append(recs, agent.Record{Source: s.env.Component, RecvTime: now.UnixNano(), Raw: arena[off:len(arena):len(arena)]})
			s.frames.Inc()
			if len(recs) == 1 {
				deadline = now.Add(s.cfg.Linger)
			}
			if len(recs) >= s.cfg.BatchSize || len(arena) >= int(s.cfg.BatchBytes) {
				return recs, s.unacked.Ack(recs), nil
			}
		case errors.Is(err, ErrOversize):
			s.oversize.Inc()
		case errors.Is(err, ErrIncomplete):
			s.incomplete.Inc()
		case err != nil:
			s.deviceLost(err)
		}
		if len(recs) > 0 && !now.Before(deadline) {
			return recs, s.unacked.Ack(recs), nil
		}
	}
}

// growArena makes room for n more bytes in arena, whose bytes are the
// frames of recs laid end to end. When it must grow, it moves them to one
// new array of at most limit bytes (batch_bytes + max_frame: the batch ends
// before it needs more) and points recs at it, so that a batch holds one
// array, not each array it outgrew as well.
func growArena(arena []byte, recs []agent.Record, n, limit int) []byte {
	if len(arena)+n <= cap(arena) {
		return arena
	}
	grown := make([]byte, len(arena), min(max(2*cap(arena), len(arena)+n, 512), max(limit, len(arena)+n)))
	copy(grown, arena)
	off := 0
	for i := range recs {
		l := len(recs[i].Raw)
		recs[i].Raw = grown[off : off+l : off+l]
		off += l
	}
	return grown
}

// poll writes the poll command when it is due.
func (s *Source) poll() error {
	if s.cfg.Poll.Command == "" {
		return nil
	}
	now := s.env.Now()
	if now.Before(s.nextPoll) {
		return nil
	}
	s.nextPoll = now.Add(s.cfg.Poll.Interval)
	if _, err := io.WriteString(s.p, s.cfg.Poll.Command); err != nil {
		return fmt.Errorf("write poll command: %w", err)
	}
	return nil
}

func (s *Source) deviceLost(err error) {
	s.lost.Inc()
	s.log.Warn("serial source: device lost; reopening it with backoff", "device", s.cfg.Device, "err", err)
	if s.p != nil {
		_ = s.p.Close()
	}
	s.p, s.framer = nil, nil
}

// reopen waits the next backoff delay and tries to open the device once.
func (s *Source) reopen(ctx context.Context) {
	if !agent.Sleep(ctx, s.bo.Next()) {
		return
	}
	if err := s.openPort(); err != nil {
		if s.bo.Attempts() == 1 || s.bo.Attempts()%10 == 0 {
			s.log.Warn("serial source: device still missing", "device", s.cfg.Device, "attempts", s.bo.Attempts(), "err", err)
		}
		return
	}
	s.bo.Reset()
	s.reconnects.Inc()
	s.log.Info("serial source: device is back", "device", s.cfg.Device)
}

// Close closes the device. Batches nacked and not yet handed out again are
// lost: a serial device cannot send them again. Close is idempotent.
func (s *Source) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.p != nil {
		if err := s.p.Close(); err != nil {
			return fmt.Errorf("serial source: close %s: %w", s.cfg.Device, err)
		}
		s.p = nil
	}
	return nil
}

var _ agent.Source = (*Source)(nil)
