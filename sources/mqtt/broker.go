package mqtt

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/pspf/pspf-edge/internal/mqttc"
)

// message is what the source needs of a received message; the client's
// inMsg has it, and tests fake it. Ack sends the PUBACK (QoS 1) or PUBREC
// (QoS 2); it does nothing for QoS 0 and after the connection the message
// came on has gone.
type message interface {
	Topic() string
	Payload() []byte
	Qos() byte
	Ack()
	// UserProperty returns the first value of the MQTT 5 user property key.
	UserProperty(key string) (string, bool)
}

// broker is the part of an MQTT client the source uses. mqttc.Client
// (internal/mqttc, shared with the MQTT sink) is the real one; unit tests
// fake it.
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
// goroutines; message may block, which stops the client reading the socket,
// but must return once stop is closed (by Disconnect, which waits for it).
type handlers struct {
	message  func(m message, stop <-chan struct{})
	oversize func() // a message over max_payload was acked and dropped
	// drained runs once the client has handed over every message it has
	// read and will pause or wait before it reads the socket again (the
	// real client paces its reads at linger under MQTT 5; under 3.1.1 and
	// in fakes it is never called).
	drained   func()
	connected func() // after every connection, the first included
	// lost counts a connection that ended, with its cause (see lossCause:
	// the label of pspf_mqtt_connections_lost_total) and error.
	lost func(cause string, err error)
	// log is where the client logs its episodes of lost connections.
	log *slog.Logger
	// versions keeps what protocol_version auto chose per broker across
	// the source's clients (redeliver makes a new one).
	versions *mqttc.Versions
}

// dialFunc builds a broker client; it starts nothing until Connect.
type dialFunc func(cfg *Config, clientID string, tlsCfg *tls.Config, h handlers) broker

// dialClient builds the real client (mqttc) for cfg.
func dialClient(cfg *Config, clientID string, tlsCfg *tls.Config, h handlers) broker {
	return newClient(clientOptions(cfg, clientID, tlsCfg), h)
}

// newClient builds the real client with options o.
func newClient(o mqttc.Options, h handlers) broker {
	o.Versions = h.versions
	return mqttc.New(o, mqttc.Handlers{
		Message:   func(m *mqttc.Message, stop <-chan struct{}) { h.message(m, stop) },
		Oversize:  h.oversize,
		Drained:   h.drained,
		Connected: h.connected,
		Lost:      h.lost,
		Log:       h.log,
	})
}

// clientOptions are the client's options for cfg: the status topic's
// offline message is the last will.
func clientOptions(cfg *Config, clientID string, tlsCfg *tls.Config) mqttc.Options {
	o := mqttc.Options{Brokers: cfg.Brokers, ClientID: clientID, Username: cfg.Username, Password: cfg.Password,
		CleanSession: cfg.CleanSession, KeepAlive: cfg.KeepAlive, ConnectTimeout: cfg.ConnectTimeout,
		MaxReconnect: cfg.MaxReconnect, MaxPayload: int(cfg.MaxPayload), TLS: tlsCfg, Name: "mqtt source"}
	if cfg.ProtocolVersion == "5" || cfg.ProtocolVersion == "auto" {
		// Under auto these apply once the broker has taken MQTT 5; with
		// one that refuses it the client falls back to 3.1.1 without
		// them, unless user properties need MQTT 5 (NeedsV5: the connect
		// then fails rather than drop them).
		//
		// The broker may send as many QoS 1 messages unacked as the source
		// holds in flight: a group commit then covers what arrived in a
		// linger, not the broker's own per-client limit.
		o.ProtocolVersion, o.ReceiveMaximum = 5, uint16(min(cfg.MaxInFlight, 65535))
		// And so the socket is read after a pause while messages keep
		// coming: what arrived meanwhile is read and
		// batched at once, one wake-up of the agent instead of one per
		// message (see mqttc.Options.ReadPace). The pause adapts between
		// linger and max_read_pace to gather about batch_size messages;
		// with max_read_pace at most linger it is linger. Under 3.1.1 the
		// broker's own in-flight limit (mosquitto: 20) would be all a
		// pause gathers before the fsync and its acks.
		o.ReadPace = max(cfg.Linger, cfg.MaxReadPace)
		if cfg.MaxReadPace > cfg.Linger {
			o.ReadPaceBatch, o.ReadPaceMin = cfg.BatchSize, cfg.Linger
		}
	}
	if cfg.ProtocolVersion == "auto" {
		o.ProtocolVersion = mqttc.ProtocolAuto
		if len(cfg.UserProperties) > 0 {
			o.NeedsV5 = "user_properties"
		}
	}
	if st := cfg.Status; st.Topic != "" {
		o.Will = &mqttc.Will{Topic: st.Topic, Payload: []byte(st.Offline), QoS: byte(st.QoS), Retain: st.Retain}
	}
	return o
}

// tlsConfig builds the TLS config of the brokers whose scheme is TLS
// (agent.TLSConfig.On); nil when none is. A tls block that a broker's
// scheme would ignore is an error, as in Validate.
func tlsConfig(cfg *Config) (*tls.Config, error) {
	need := false
	for _, b := range cfg.Brokers {
		u, err := url.Parse(b)
		if err != nil {
			continue // dial reports it
		}
		on, err := cfg.TLS.On(u.Scheme)
		if err != nil {
			return nil, fmt.Errorf("broker %s: %w", u.Redacted(), err)
		}
		need = need || on
	}
	if !need {
		return nil, nil
	}
	return cfg.TLS.Build()
}
