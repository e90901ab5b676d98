//go:build !no_mqtt

package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/mqttc"
)

// mqttLeftOut is the build tag that leaves the MQTT channel out: none, it
// is in this binary.
const mqttLeftOut = ""

// mqttChannel takes bundles from retained messages, one topic per target:
// the broker keeps the last bundle of each and hands it to an agent when it
// subscribes, so an agent that was off during a push gets it when it
// connects. It speaks MQTT through internal/mqttc, the client of the MQTT
// source and sink.
type mqttChannel struct {
	c    MQTTConfig
	d    Deps
	opts mqttc.Options
	out  *outage
	cl   *mqttc.Client // Push's
	// subTimeout bounds the wait for a SUBACK: mqttTimeout (tests
	// shorten it).
	subTimeout time.Duration
}

const (
	mqttTimeout   = 10 * time.Second
	mqttKeepAlive = 30 * time.Second
)

func newMQTT(c MQTTConfig, d Deps) (*mqttChannel, error) {
	if c.Topic == "" {
		c.Topic = DefaultMQTTTopic
	}
	d.Secrets.Add(c.Password)
	u, err := url.Parse(c.Broker)
	if err != nil {
		return nil, fmt.Errorf("fleet: mqtt broker: %w", err)
	}
	o := mqttc.Options{Brokers: []string{c.Broker}, Username: c.Username, Password: c.Password,
		CleanSession: true, KeepAlive: mqttKeepAlive, ConnectTimeout: mqttTimeout, MaxReconnect: 30 * time.Second,
		// A bundle is at most MaxBundleBytes: one byte more still reaches
		// the applier, which refuses it as too large; a larger message is
		// dropped unread (Handlers.Oversize), so a bundle topic anyone can
		// publish on cannot make the agent allocate more.
		MaxPayload: MaxBundleBytes + 1, Name: "fleet mqtt"}
	if on, err := c.TLS.On(u.Scheme); err != nil {
		return nil, fmt.Errorf("fleet: mqtt broker %s: %w", agent.RedactURL(c.Broker), err)
	} else if on {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("fleet: mqtt: %w", err)
		}
		o.TLS = tc
	}
	return &mqttChannel{c: c, d: d, opts: o, out: newOutage(d, ChannelMQTT), subTimeout: mqttTimeout}, nil
}

type message struct {
	target string
	raw    []byte
}

// Run subscribes to every target's topic (again after each reconnect: the
// session is clean; a refused subscription again with a backoff, see
// subscribe) and hands the bundles to got from its own goroutine.
// A loss of the connection, a failed connect or subscribe is a failure of
// the channel (one WARN per outage, a metric each); the client's own log
// of the episode is left out, so as not to say it twice.
func (m *mqttChannel) Run(ctx context.Context, targets []string, got func(string, []byte)) error {
	byTopic := map[string]string{}
	filters := map[string]byte{}
	for _, t := range targets {
		byTopic[topicFor(m.c.Topic, t)] = t
		filters[topicFor(m.c.Topic, t)] = 1
	}
	msgs := make(chan message)
	connected := make(chan struct{}, 1)
	var oversize atomic.Bool
	o := m.opts
	o.ClientID = "pspf-fleet-" + m.d.Name
	cl := mqttc.New(o, mqttc.Handlers{
		Message: func(msg *mqttc.Message, stop <-chan struct{}) {
			if len(msg.Payload()) == 0 {
				msg.Ack() // a retained bundle deleted: nothing to apply
				return
			}
			select {
			case msgs <- message{byTopic[msg.Topic()], msg.Payload()}:
				msg.Ack()
			case <-ctx.Done():
			case <-stop:
			}
		},
		// The subscription is made on a goroutine of its own: the client's
		// reader may meanwhile wait in Message for Run's loop to take a
		// bundle, and Connect waits for this handler.
		Connected: func() {
			select {
			case connected <- struct{}{}:
			default: // a subscription is due already
			}
		},
		Lost: func(cause string, err error) {
			m.out.fail(fmt.Errorf("fleet: mqtt connection lost (%s): %w", cause, err))
		},
		Oversize: func() {
			m.d.Metrics.Counter("pspf_fleet_bundles_refused_total", "reason", ErrMalformed.Error()).Inc()
			if !oversize.Swap(true) { // a retained one comes again on every connect
				m.d.Logger.Warn("fleet: bundle refused; the pipelines stay as they are", "reason", ErrMalformed.Error(),
					"err", fmt.Sprintf("fleet: mqtt: a message over %d bytes on a bundle topic, dropped unread", MaxBundleBytes+1))
			}
		},
	})
	var wg sync.WaitGroup
	sctx, stop := context.WithCancel(ctx)
	defer func() {
		stop()           // first: a Subscribe cut short by the end is no outage
		cl.Disconnect(0) // releases a Message waiting
		wg.Wait()
	}()
	wg.Go(func() { m.subscribe(sctx, cl, filters, connected) })
	if err := m.connect(ctx, cl); err != nil {
		return nil // ctx done
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-msgs:
			got(msg.target, msg.raw)
		}
	}
}

// subscribe subscribes to filters after every connection until ctx is
// done. A SUBSCRIBE the broker refuses (an ACL that does not grant the
// topic yet) or leaves unanswered is a failure of the channel and is tried
// again on the same connection with a backoff (1 s doubling to 30 s), or
// at once on a new connection: an agent whose ACL is fixed gets its
// bundles without waiting for its connection to drop. A connection gone
// (which Lost reports) waits for the next one.
func (m *mqttChannel) subscribe(ctx context.Context, cl *mqttc.Client, filters map[string]byte, connected <-chan struct{}) {
	bo := agent.Backoff{Initial: time.Second, Max: 30 * time.Second}
	mqttc.KeepSetUp(ctx, connected, bo, func(bool) error {
		sctx, cancel := context.WithTimeout(ctx, m.subTimeout)
		defer cancel()
		err := cl.Subscribe(sctx, filters)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no SUBACK within %v: %w", m.subTimeout, err)
		}
		return err
	}, m.out.ok, func(err error, _ time.Duration) {
		m.out.fail(fmt.Errorf("fleet: mqtt subscribe: %w", err))
	})
}

// connect connects, retrying with backoff until it succeeds or ctx is done;
// from then on the client reconnects by itself.
func (m *mqttChannel) connect(ctx context.Context, cl *mqttc.Client) error {
	bo := agent.Backoff{Initial: time.Second, Max: 30 * time.Second}
	for {
		_, err := cl.Connect(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.out.fail(fmt.Errorf("fleet: mqtt connect %s: %w", agent.RedactURL(m.c.Broker), err))
		if !agent.Sleep(ctx, bo.Next()) {
			return ctx.Err()
		}
	}
}

// Push publishes the bundle as target's retained message, QoS 1: it
// returns once the broker has it.
func (m *mqttChannel) Push(ctx context.Context, target string, raw []byte) error {
	if m.cl == nil {
		o := m.opts
		o.ClientID = fmt.Sprintf("pspf-fleet-push-%d", time.Now().UnixNano())
		cl := mqttc.New(o, mqttc.Handlers{})
		if _, err := cl.Connect(ctx); err != nil {
			cl.Disconnect(0)
			return fmt.Errorf("fleet: mqtt connect %s: %w", agent.RedactURL(m.c.Broker), err)
		}
		m.cl = cl
	}
	if err := m.cl.Publish(ctx, topicFor(m.c.Topic, target), 1, true, raw); err != nil {
		return fmt.Errorf("fleet: mqtt publish: %w", err)
	}
	return nil
}

// Close disconnects Push's client.
func (m *mqttChannel) Close() {
	if m.cl != nil {
		m.cl.Disconnect(0)
	}
}
