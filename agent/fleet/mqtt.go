package fleet

import (
	"context"
	"fmt"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pspf/pspf-edge/agent"
)

// mqttChannel takes bundles from retained messages, one topic per target:
// the broker keeps the last bundle of each and hands it to an agent when it
// subscribes, so an agent that was off during a push gets it when it
// connects.
type mqttChannel struct {
	c    MQTTConfig
	d    Deps
	opts *paho.ClientOptions
	out  *outage
	cl   paho.Client // Push's
}

const mqttTimeout = 10 * time.Second

func newMQTT(c MQTTConfig, d Deps) (*mqttChannel, error) {
	if c.Topic == "" {
		c.Topic = DefaultMQTTTopic
	}
	d.Secrets.Add(c.Password)
	o := paho.NewClientOptions().AddBroker(c.Broker).SetUsername(c.Username).SetPassword(c.Password).
		SetCleanSession(true).SetAutoReconnect(true).SetMaxReconnectInterval(30 * time.Second).
		SetConnectRetry(false).SetConnectTimeout(mqttTimeout).SetOrderMatters(true)
	u, err := url.Parse(c.Broker)
	if err != nil {
		return nil, fmt.Errorf("fleet: mqtt broker: %w", err)
	}
	if on, err := c.TLS.On(u.Scheme); err != nil {
		return nil, fmt.Errorf("fleet: mqtt broker %s: %w", agent.RedactURL(c.Broker), err)
	} else if on {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("fleet: mqtt: %w", err)
		}
		o.SetTLSConfig(tc)
	}
	return &mqttChannel{c: c, d: d, opts: o, out: newOutage(d, ChannelMQTT)}, nil
}

type message struct {
	target string
	raw    []byte
}

// Run subscribes to every target's topic (again after each reconnect: the
// session is clean) and hands the bundles to got from its own goroutine.
func (m *mqttChannel) Run(ctx context.Context, targets []string, got func(string, []byte)) error {
	byTopic := map[string]string{}
	filters := map[string]byte{}
	for _, t := range targets {
		byTopic[topicFor(m.c.Topic, t)] = t
		filters[topicFor(m.c.Topic, t)] = 1
	}
	msgs := make(chan message)
	onMsg := func(_ paho.Client, msg paho.Message) {
		if len(msg.Payload()) == 0 {
			return // a retained bundle deleted: nothing to apply
		}
		select {
		case msgs <- message{byTopic[msg.Topic()], msg.Payload()}:
		case <-ctx.Done():
		}
	}
	o := *m.opts
	o.SetClientID("pspf-fleet-" + m.d.Name)
	o.SetOnConnectHandler(func(cl paho.Client) {
		tok := cl.SubscribeMultiple(filters, onMsg)
		if !tok.WaitTimeout(mqttTimeout) {
			m.out.fail(fmt.Errorf("fleet: mqtt subscribe: no answer in %s", mqttTimeout))
			return
		}
		if err := tok.Error(); err != nil {
			m.out.fail(fmt.Errorf("fleet: mqtt subscribe: %w", err))
			return
		}
		m.out.ok()
	})
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		m.out.fail(fmt.Errorf("fleet: mqtt connection lost: %w", err))
	})
	cl, err := m.connect(ctx, &o)
	if err != nil {
		return nil // ctx done
	}
	defer cl.Disconnect(250)
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-msgs:
			got(msg.target, msg.raw)
		}
	}
}

// connect connects, retrying with backoff until it succeeds or ctx is done.
func (m *mqttChannel) connect(ctx context.Context, o *paho.ClientOptions) (paho.Client, error) {
	bo := agent.Backoff{Initial: time.Second, Max: 30 * time.Second}
	for {
		cl := paho.NewClient(o)
		tok := cl.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			cl.Disconnect(0)
			return nil, ctx.Err()
		}
		err := tok.Error()
		if err == nil {
			return cl, nil
		}
		m.out.fail(fmt.Errorf("fleet: mqtt connect %s: %w", agent.RedactURL(m.c.Broker), err))
		cl.Disconnect(0)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(bo.Next()):
		}
	}
}

// Push publishes the bundle as target's retained message, QoS 1: it
// returns once the broker has it.
func (m *mqttChannel) Push(ctx context.Context, target string, raw []byte) error {
	if m.cl == nil {
		o := *m.opts
		o.SetClientID(fmt.Sprintf("pspf-fleet-push-%d", time.Now().UnixNano()))
		cl := paho.NewClient(&o)
		tok := cl.Connect()
		if err := waitToken(ctx, tok); err != nil {
			return fmt.Errorf("fleet: mqtt connect %s: %w", agent.RedactURL(m.c.Broker), err)
		}
		m.cl = cl
	}
	if err := waitToken(ctx, m.cl.Publish(topicFor(m.c.Topic, target), 1, true, raw)); err != nil {
		return fmt.Errorf("fleet: mqtt publish: %w", err)
	}
	return nil
}

// Close disconnects Push's client.
func (m *mqttChannel) Close() {
	if m.cl != nil {
		m.cl.Disconnect(250)
	}
}

func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
