package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// message is what the source needs of a received message; paho.Message has
// it, and tests fake it. Ack sends the PUBACK (QoS 1); it does nothing for
// QoS 0 and after the connection the message came on has gone.
type message interface {
	Topic() string
	Payload() []byte
	Qos() byte
	Ack()
}

// broker is the part of an MQTT client the source uses. The paho adapter
// below is the real one; unit tests fake it.
type broker interface {
	// Connect makes the first connection; the client reconnects by itself
	// after that, calling handlers.connected after every connection. It
	// reports whether the broker still had the session.
	Connect(ctx context.Context) (sessionPresent bool, err error)
	// Subscribe subscribes to the filters and fails if the broker refuses one.
	Subscribe(ctx context.Context, filters map[string]byte) error
	// Publish sends one message and waits for the broker's acknowledgement.
	Publish(ctx context.Context, topic string, qos byte, retain bool, payload []byte) error
	// Disconnect ends the connection after waiting up to quiesce for work in
	// progress; unacked messages stay with the broker.
	Disconnect(quiesce time.Duration)
}

// handlers are the broker's calls into the source. They run on the client's
// goroutines; message may block, which stops the client reading the socket.
type handlers struct {
	message   func(message)
	connected func()
	lost      func(error)
	reconnect func()
}

// dialFunc builds a broker client; it starts nothing until Connect.
type dialFunc func(cfg *Config, clientID string, tlsCfg *tls.Config, h handlers) broker

// pahoBroker adapts paho's client.
type pahoBroker struct{ c paho.Client }

func dialPaho(cfg *Config, clientID string, tlsCfg *tls.Config, h handlers) broker {
	o := paho.NewClientOptions()
	for _, b := range cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(clientID)
	o.SetCleanSession(cfg.CleanSession)
	o.SetUsername(cfg.Username)
	o.SetPassword(cfg.Password)
	// Manual acks: the PUBACK goes out when the batch is durable, not when
	// the handler returns.
	o.SetAutoAckDisabled(true)
	// Ordered delivery: the handler runs on paho's router goroutine, so a
	// handler blocked on the in-flight bound stops paho reading the socket.
	o.SetOrderMatters(true)
	o.SetKeepAlive(cfg.KeepAlive)
	// A PINGRESP waits behind every message the broker has queued for us:
	// while a QoS 0 flood is taken in slower than it comes, that can be many
	// seconds, and giving up on it drops the connection and the flood's QoS 0
	// messages with it. Wait a whole keepalive (a dead TCP connection is
	// noticed anyway; this only bounds a silent one).
	o.SetPingTimeout(cfg.KeepAlive)
	o.SetConnectTimeout(cfg.ConnectTimeout)
	o.SetAutoReconnect(true)
	o.SetMaxReconnectInterval(cfg.MaxReconnect)
	o.SetConnectRetry(false) // the runner retries the first connect with backoff
	o.SetResumeSubs(false)   // the source subscribes again after each connect
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	o.SetCustomOpenConnectionFn(openConn)
	o.SetStore(newStore())
	if st := cfg.Status; st.Topic != "" {
		o.SetWill(st.Topic, st.Offline, byte(st.QoS), st.Retain)
	}
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { h.message(m) })
	o.SetOnConnectHandler(func(paho.Client) { h.connected() })
	o.SetConnectionLostHandler(func(_ paho.Client, err error) { h.lost(err) })
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { h.reconnect() })
	return &pahoBroker{c: paho.NewClient(o)}
}

func wait(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pahoBroker) Connect(ctx context.Context) (bool, error) {
	t := p.c.Connect()
	if err := wait(ctx, t); err != nil {
		return false, err
	}
	return t.(*paho.ConnectToken).SessionPresent(), nil
}

func (p *pahoBroker) Subscribe(ctx context.Context, filters map[string]byte) error {
	t := p.c.SubscribeMultiple(filters, nil)
	if err := wait(ctx, t); err != nil {
		return err
	}
	var errs []error
	for f, code := range t.(*paho.SubscribeToken).Result() {
		if code == 0x80 {
			errs = append(errs, fmt.Errorf("broker refused subscription %q", f))
		}
	}
	return errors.Join(errs...)
}

func (p *pahoBroker) Publish(ctx context.Context, topic string, qos byte, retain bool, payload []byte) error {
	return wait(ctx, p.c.Publish(topic, qos, retain, payload))
}

func (p *pahoBroker) Disconnect(quiesce time.Duration) { p.c.Disconnect(uint(quiesce.Milliseconds())) }

// tlsConfig builds the TLS config from the files; nil when TLS is not configured.
func tlsConfig(c TLSConfig) (*tls.Config, error) {
	if c == (TLSConfig{}) {
		return nil, nil
	}
	tc := &tls.Config{ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in, documented as tests only
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca_file %s: no PEM certificate found", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
