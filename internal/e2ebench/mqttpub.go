package e2ebench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// pubConn is a minimal MQTT 3.1.1 publisher on one connection: CONNECT,
// PUBLISH at QoS 0 or 1 with up to window messages awaiting their PUBACK,
// DISCONNECT. The load generator uses it rather than a full client so that
// generating load costs as little CPU as possible on the machine it shares
// with the agent and the brokers.
type pubConn struct {
	c       net.Conn
	w       *bufio.Writer
	qos     byte
	slots   chan struct{} // one token per unacknowledged QoS 1 message
	id      uint16
	acked   atomic.Uint64
	readErr chan error
	hdr     []byte
}

func dialPub(ctx context.Context, addr, clientID string, qos byte, window int) (*pubConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("e2ebench: mqtt connect %s: %w", addr, err)
	}
	// CONNECT: protocol MQTT level 4, clean session, keepalive off.
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0}
	pl := appendString(nil, clientID)
	pkt := appendFixed(nil, 0x10, len(vh)+len(pl))
	pkt = append(append(pkt, vh...), pl...)
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		return nil, fmt.Errorf("e2ebench: mqtt connect: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("e2ebench: mqtt connack: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("e2ebench: mqtt connack: refused (% x)", ack)
	}
	c.SetReadDeadline(time.Time{})
	p := &pubConn{c: c, w: bufio.NewWriterSize(c, 64<<10), qos: qos, readErr: make(chan error, 1)}
	if qos > 0 {
		p.slots = make(chan struct{}, window)
	}
	go p.readAcks()
	return p, nil
}

// readAcks consumes PUBACKs until the connection closes.
func (p *pubConn) readAcks() {
	r := bufio.NewReaderSize(p.c, 16<<10)
	for {
		typ, err := r.ReadByte()
		if err != nil {
			p.readErr <- err
			return
		}
		n, err := readRemaining(r)
		if err != nil {
			p.readErr <- err
			return
		}
		if _, err := r.Discard(n); err != nil {
			p.readErr <- err
			return
		}
		if typ&0xf0 == 0x40 && p.slots != nil { // PUBACK
			p.acked.Add(1)
			<-p.slots
		}
	}
}

// publish queues one message; at QoS 1 it blocks while window messages
// await their PUBACK (flushing what is buffered first).
func (p *pubConn) publish(ctx context.Context, topic, payload []byte) error {
	if p.qos > 0 {
		select {
		case p.slots <- struct{}{}:
		default:
			if err := p.w.Flush(); err != nil {
				return fmt.Errorf("e2ebench: mqtt publish: %w", err)
			}
			select {
			case p.slots <- struct{}{}:
			case err := <-p.readErr:
				return fmt.Errorf("e2ebench: mqtt publish: connection lost: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	n := 2 + len(topic) + len(payload)
	if p.qos > 0 {
		n += 2
	}
	p.hdr = appendFixed(p.hdr[:0], 0x30|p.qos<<1, n)
	p.hdr = append(p.hdr, byte(len(topic)>>8), byte(len(topic)))
	p.w.Write(p.hdr)
	p.w.Write(topic)
	if p.qos > 0 {
		p.id++
		if p.id == 0 {
			p.id = 1
		}
		p.w.Write([]byte{byte(p.id >> 8), byte(p.id)})
	}
	if _, err := p.w.Write(payload); err != nil {
		return fmt.Errorf("e2ebench: mqtt publish: %w", err)
	}
	return nil
}

// flush sends what is buffered.
func (p *pubConn) flush() error {
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("e2ebench: mqtt publish: %w", err)
	}
	return nil
}

// close flushes, waits (up to 30 s) until every QoS 1 message is
// acknowledged, and disconnects.
func (p *pubConn) close() error {
	err := p.flush()
	if p.slots != nil && err == nil {
		deadline := time.Now().Add(30 * time.Second)
		for len(p.slots) > 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if len(p.slots) > 0 {
			err = fmt.Errorf("e2ebench: mqtt: %d messages never acknowledged", len(p.slots))
		}
	}
	p.w.Write([]byte{0xe0, 0})
	p.w.Flush()
	p.c.Close()
	return err
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// appendFixed appends a fixed header: type byte and remaining length.
func appendFixed(b []byte, typ byte, n int) []byte {
	b = append(b, typ)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func readRemaining(r *bufio.Reader) (int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
	return 0, errors.New("e2ebench: mqtt: malformed remaining length")
}

// LoadConfig is one run of the load generator.
type LoadConfig struct {
	// Addr is the MQTT broker's host:port.
	Addr string
	// QoS is 0 or 1.
	QoS byte
	// Messages is how many to publish (sequence numbers First..First+Messages-1).
	Messages uint64
	// First is the first sequence number: loads with disjoint ranges can
	// run side by side (a mixed flood) and be counted by one Tracker.
	First uint64
	// Rate is the total messages per second; 0 publishes as fast as possible.
	Rate float64
	// Conns is the number of connections, each publishing every Conns-th
	// sequence number at Rate/Conns.
	Conns int
	// Sensors is the number of topics sensors/sNNN/temp, by seq % Sensors.
	Sensors int
	// Size is the payload size in bytes (at least; a small payload is
	// never cut).
	Size int
	// Mix decides which payloads are invalid or filtered.
	Mix Mix
	// Window is the QoS 1 messages awaiting a PUBACK per connection.
	Window int
	// Noise pads with incompressible letters instead of x: what the agent
	// holds and sends then is not shrunk by the sink's compression.
	Noise bool
}

// Load publishes cfg.Messages messages and returns when all are written
// (QoS 0) or acknowledged by the broker (QoS 1). Progress reports how many
// sequence numbers are published so far: every seq below it has been sent.
type Load struct {
	cfg  LoadConfig
	next []atomic.Uint64 // per connection: its next sequence number
}

// NewLoad returns a load generator for cfg.
func NewLoad(cfg LoadConfig) *Load {
	if cfg.Conns < 1 {
		cfg.Conns = 1
	}
	if cfg.Sensors < 1 {
		cfg.Sensors = 1
	}
	if cfg.Window < 1 {
		cfg.Window = 1000
	}
	l := &Load{cfg: cfg, next: make([]atomic.Uint64, cfg.Conns)}
	for i := range l.next {
		l.next[i].Store(cfg.First + uint64(i))
	}
	return l
}

// Progress returns the lowest sequence number some connection has yet to
// send: all below it are sent.
func (l *Load) Progress() uint64 {
	p := l.cfg.First + l.cfg.Messages
	for i := range l.next {
		p = min(p, l.next[i].Load())
	}
	return p
}

// Run publishes the load; it returns the first error of any connection.
func (l *Load) Run(ctx context.Context, runID string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	topics := make([][]byte, l.cfg.Sensors)
	for i := range topics {
		topics[i] = fmt.Appendf(nil, "sensors/s%03d/temp", i)
	}
	var wg sync.WaitGroup
	errs := make([]error, l.cfg.Conns)
	for c := range l.cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[c] = l.runConn(ctx, c, runID+"-"+strconv.Itoa(c), topics); errs[c] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Load) runConn(ctx context.Context, c int, clientID string, topics [][]byte) error {
	p, err := dialPub(ctx, l.cfg.Addr, clientID, l.cfg.QoS, l.cfg.Window)
	if err != nil {
		return err
	}
	step := uint64(l.cfg.Conns)
	end := l.cfg.First + l.cfg.Messages
	var interval time.Duration
	if l.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(l.cfg.Conns) / l.cfg.Rate)
	}
	start := time.Now()
	var buf []byte
	var sent int64
	for seq := l.cfg.First + uint64(c); seq < end; seq += step {
		if interval > 0 {
			due := start.Add(time.Duration(sent) * interval)
			if d := time.Until(due); d > time.Millisecond {
				if err := p.flush(); err != nil {
					p.close()
					return err
				}
				select {
				case <-time.After(d):
				case <-ctx.Done():
					p.close()
					return ctx.Err()
				}
			}
		}
		if l.cfg.Noise {
			buf = AppendNoisyPayload(buf[:0], seq, time.Now().UnixMicro(), l.cfg.Mix.KindOf(seq), l.cfg.Size)
		} else {
			buf = AppendPayload(buf[:0], seq, time.Now().UnixMicro(), l.cfg.Mix.KindOf(seq), l.cfg.Size)
		}
		if err := p.publish(ctx, topics[seq%uint64(len(topics))], buf); err != nil {
			p.close()
			return err
		}
		sent++
		l.next[c].Store(seq + step)
	}
	return p.close()
}

// PublishOne publishes a single QoS 1 message on a connection of its own
// (warm-up and window flush messages).
func PublishOne(ctx context.Context, addr, clientID, topic string, payload []byte) error {
	p, err := dialPub(ctx, addr, clientID, 1, 1)
	if err != nil {
		return err
	}
	if err := p.publish(ctx, []byte(topic), payload); err != nil {
		p.close()
		return err
	}
	return p.close()
}
