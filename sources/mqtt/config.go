package mqtt

import (
	"net/url"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the MQTT source's config.
type Config struct {
	Brokers []string `yaml:"brokers" doc:"broker URLs, tried in order: tcp://host:1883, ssl://host:8883, ws://, wss://"`
	// ProtocolVersion 5 lets the source set Receive Maximum (the broker
	// may then send max_in_flight QoS 1 messages unacked, not its own
	// per-client limit: mosquitto's is 20), pace its reads and read user
	// properties. The default, auto, gets all that from a broker that
	// speaks MQTT 5 and still works with one that does not.
	ProtocolVersion string          `yaml:"protocol_version" enum:"3.1.1,5,auto" doc:"MQTT version: auto (the default: 5, or 3.1.1 with a broker that refuses 5; user_properties then fail the connect), 3.1.1 or 5 (Receive Maximum = max_in_flight, paced reads, user properties, reason codes)"`
	ClientID        string          `yaml:"client_id" doc:"MQTT client id; it names the persistent session, so keep it stable; default: pspf-edge-<agent>-<pipeline>-<component>"`
	CleanSession    bool            `yaml:"clean_session" doc:"start a fresh session on every connect; only allowed when every subscription is QoS 0"`
	Username        string          `yaml:"username" doc:"user name; use ${ENV} or ${file:/path} for secrets"`
	Password        string          `yaml:"password" secret:"true" doc:"password; use ${ENV} or ${file:/path}, it is never logged"`
	Subscriptions   []Subscription  `yaml:"subscriptions" doc:"topic filters to subscribe to, with their QoS"`
	TLS             agent.TLSConfig `yaml:"tls" doc:"TLS for ssl://, mqtts:// and wss:// brokers; refused with tcp://, mqtt:// and ws:// ones"`
	KeepAlive       time.Duration   `yaml:"keepalive" min:"1s" doc:"MQTT keepalive; the broker drops the session after 1.5 times this without traffic"`
	ConnectTimeout  time.Duration   `yaml:"connect_timeout" min:">0" doc:"how long one connection attempt may take"`
	MaxReconnect    time.Duration   `yaml:"max_reconnect_interval" min:"1s" doc:"cap of the exponential backoff between reconnects"`
	// MaxInFlight is at most 65535, the MQTT packet id space: more could
	// never be unacked at once.
	MaxInFlight int `yaml:"max_in_flight" min:"1" max:"65535" doc:"messages received but not yet acked (QoS 1: durable; QoS 0: in the log) before the source stops taking more: the broker then holds them"`
	// MaxInFlightBytes bounds the same messages in bytes (payload and
	// topic): it is what bounds the source's memory when messages are
	// large, max_in_flight when they are small. Below 64 KiB every few
	// messages wait for an fsync; 1 GiB is far beyond the memory of the
	// boards the agent runs on.
	MaxInFlightBytes agent.ByteSize `yaml:"max_in_flight_bytes" min:"64KiB" max:"1GiB" doc:"bytes of the messages received but not yet acked (payload and topic) before the source stops taking more; a larger message is taken alone"`
	BatchSize        int            `yaml:"batch_size" min:"1" max:"65536" doc:"most messages per batch"`
	// Linger is at most 1s: a longer one only delays acks; the group
	// commit batches anyway. Under MQTT 5 it is also the shortest pause
	// between two reads of the socket (see MaxReadPace).
	Linger time.Duration `yaml:"linger" max:"1s" doc:"how long a batch waits for more messages after its first one; only while messages come closer together than this (MQTT 5: also the shortest pause between reads; set alone, the pause, as max_read_pace then defaults to it)"`
	// MaxReadPace is the longest pause between two reads of the socket
	// under MQTT 5 (mqttc.Options.ReadPace, ReadPaceBatch): the pause
	// adapts between linger and this so that a read gathers about
	// batch_size messages at the rate seen, as what arrives meanwhile is
	// read with one system call and handed on as one batch: the fewer
	// reads, the fewer wake-ups of the agent per message at low rates,
	// for up to this much more latency. At most 1s, like linger: the
	// group commit fsyncs once a second by default, and a longer pause
	// would only delay the acks. Its default is 1s, or linger when the
	// config sets linger and not this (see Validate): a linger set alone
	// paces the reads at exactly that, as it did before the pace adapted.
	MaxReadPace time.Duration `yaml:"max_read_pace" max:"1s" doc:"MQTT 5: the longest pause between two reads of the socket; the pause adapts between linger and this to gather about batch_size messages per read, so a message may wait up to this long before the agent reads it; 0 or at most linger: the pause is linger; default 1s, or linger when linger is set"`
	// MaxPayload is at most 256 MiB, MQTT's own maximum packet size.
	MaxPayload    agent.ByteSize `yaml:"max_payload" min:"1B" max:"256MiB" doc:"larger payloads are dropped (acked to the broker) and counted"`
	TopicTemplate string         `yaml:"topic_template" doc:"topic levels to fields: sensors/{site}/{device}/temp; + skips a level, a trailing # the rest"`
	Key           string         `yaml:"key" doc:"the record key, from template fields: {device} or {site}-{device}"`
	TopicField    string         `yaml:"topic_field" doc:"name of a field holding the full topic; empty for none"`
	// UserProperties needs MQTT 5: 3.1.1 has no properties.
	UserProperties []string     `yaml:"user_properties" doc:"MQTT 5 user properties to copy into string fields of the same name (the first value of each); a message without one has no such field"`
	Status         StatusConfig `yaml:"status" doc:"birth and last-will messages announcing this agent online and offline"`
}

// Subscription is one topic filter and its QoS. A filter may hold the
// wildcards + and #, and may be a shared subscription ($share/group/filter)
// so that several agents split one stream.
type Subscription struct {
	Topic string `yaml:"topic" doc:"topic filter: sensors/+/+/temp, sensors/#, $share/group/sensors/#"`
	QoS   int    `yaml:"qos" doc:"0 (at most once) or 1 (at least once; acked after the durable write); 2 is taken as 1 for acking"`
}

// StatusConfig announces the agent on a topic: the birth message after every
// connect, the last will when the connection is lost without a goodbye, and
// the offline message again on a clean shutdown. All are retained by default.
type StatusConfig struct {
	Topic   string `yaml:"topic" doc:"status topic; empty disables birth and will; {agent} is replaced by the agent name"`
	Online  string `yaml:"online" doc:"birth payload"`
	Offline string `yaml:"offline" doc:"last-will payload, also sent on a clean shutdown"`
	QoS     int    `yaml:"qos" doc:"QoS of the status messages"`
	Retain  bool   `yaml:"retain" doc:"retain the status messages"`
}

// Defaults returns the config's defaults.
func Defaults() *Config {
	return &Config{
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 10 * time.Second,
		MaxReconnect:   30 * time.Second,
		MaxInFlight:    1000,
		// 2 MiB holds max_in_flight messages of up to 2 KiB; larger ones
		// are bounded by bytes. It is the largest share of the agent's
		// memory under a flood of large messages (README: memory), and
		// still lets 2 MiB through per group commit (10 ms): at QoS 1 far
		// more than a gateway's flash takes.
		MaxInFlightBytes: 2 << 20,
		BatchSize:        500,
		Linger:           5 * time.Millisecond,
		// One read a second at 100 msg/s, about four at 2,000 (batch_size
		// 500): a tenth of the CPU per message of reading each as it
		// comes (README: CPU per record at low rates), for up to a second
		// of latency. linger: 5ms alone restores reads as messages come.
		MaxReadPace:     time.Second,
		MaxPayload:      256 << 10,
		ProtocolVersion: "auto",
		Status:          StatusConfig{Online: "online", Offline: "offline", QoS: 1, Retain: true},
	}
}

// Validate checks the config beyond its fields' tags. The limits of the
// tags keep one source's memory bounded: max_in_flight_bytes (or one
// message up to max_payload, when it is larger) is the most payload it
// holds at once.
//
// A config that sets linger and not max_read_pace gets max_read_pace =
// linger: reads paced at exactly the linger it asks for, as before the
// pace adapted (its latency promise), not up to the default second.
func (c *Config) Validate(n agent.Node) {
	if n.Field("linger").Present() && !n.Field("max_read_pace").Present() {
		c.MaxReadPace = c.Linger
	}
	if len(c.Brokers) == 0 {
		n.Field("brokers").Errorf("must list at least one broker URL")
	}
	for i, b := range c.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" || !validScheme(u.Scheme) {
			n.Field("brokers").Index(i).Errorf("must be a URL like tcp://host:1883 or ssl://host:8883, got %q", agent.RedactURL(n.Field("brokers").Index(i).Text()))
		} else if _, err := c.TLS.On(u.Scheme); err != nil {
			// A tls block that would be ignored is refused (agent.TLSConfig).
			n.Field("brokers").Index(i).Errorf("%v", err)
		}
	}
	if len(c.Subscriptions) == 0 {
		n.Field("subscriptions").Errorf("must list at least one topic filter")
	}
	maxQoS := 0
	for i, s := range c.Subscriptions {
		sn := n.Field("subscriptions").Index(i)
		if msg := checkFilter(s.Topic); msg != "" {
			sn.Field("topic").Errorf("%s, got %q", msg, sn.Field("topic").Text())
		}
		if s.QoS < 0 || s.QoS > 2 {
			sn.Field("qos").Errorf("must be 0, 1 or 2, got %q", sn.Field("qos").Text())
		}
		maxQoS = max(maxQoS, s.QoS)
	}
	if c.CleanSession && maxQoS > 0 {
		// A clean session forgets what the broker queued while the agent was
		// away: QoS 1 would silently become "at most once" across restarts.
		n.Field("clean_session").Errorf("must be false when a subscription has QoS 1 or 2 (the persistent session is what makes redelivery work)")
	}
	tmpl, err := parseTemplate(c.TopicTemplate)
	if err != nil {
		n.Field("topic_template").Errorf("%v, got %q", err, n.Field("topic_template").Text())
	} else if _, err := parseKey(c.Key, tmpl); err != nil {
		n.Field("key").Errorf("%v, got %q", err, n.Field("key").Text())
	}
	if c.Status.QoS < 0 || c.Status.QoS > 2 {
		n.Field("status").Field("qos").Errorf("must be 0, 1 or 2, got %q", n.Field("status").Field("qos").Text())
	}
	if len(c.UserProperties) > 0 && c.ProtocolVersion == "3.1.1" {
		n.Field("user_properties").Errorf("needs protocol_version: 5 or auto (MQTT 3.1.1 has no user properties)")
	}
	for i, name := range c.UserProperties {
		if name == "" {
			n.Field("user_properties").Index(i).Errorf("must not be empty")
		}
	}
	if strings.ContainsAny(c.Status.Topic, "+#") {
		n.Field("status").Field("topic").Errorf("must not contain wildcards, got %q", n.Field("status").Field("topic").Text())
	}
}

func validScheme(s string) bool {
	switch s {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
		return true
	}
	return false
}

// checkFilter returns what is wrong with an MQTT topic filter, or "".
func checkFilter(f string) string {
	if f == "" {
		return "must not be empty"
	}
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		group, filter, ok := strings.Cut(rest, "/")
		if !ok || group == "" || strings.ContainsAny(group, "+#") || filter == "" {
			return "a shared subscription must look like $share/group/filter"
		}
		f = filter
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return "# must be a whole level and the last one"
		}
		if strings.Contains(l, "+") && l != "+" {
			return "+ must be a whole level"
		}
	}
	return ""
}

// Factory returns the registry entry of the MQTT source.
func Factory() agent.Factory[agent.Source] {
	return agent.Typed[agent.Source]("subscribes to MQTT topics; QoS 1 messages are acked to the broker only once durable",
		Defaults, func(c *Config, env agent.Env) (agent.Source, error) { return New(*c, env) })
}
