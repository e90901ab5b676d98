package fleet

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Channels a bundle can come by.
const (
	ChannelHTTPS = "https"
	ChannelMQTT  = "mqtt"
	ChannelKafka = "kafka"
)

// Config is the agent file's fleet section.
type Config struct {
	// Channel is how bundles come: an HTTPS URL polled with
	// If-None-Match, an MQTT retained topic, or a compacted Kafka topic.
	Channel string `yaml:"channel" enum:"https,mqtt,kafka" required:"true" doc:"how bundles come: https (polled), mqtt (retained topic) or kafka (compacted topic)"`
	// PublicKeys are the PEM files of the keys bundles must be signed
	// with (fleet keygen's PREFIX.pub).
	PublicKeys []string `yaml:"public_keys" doc:"PEM public keys a bundle must be signed with (from pspf-edge fleet keygen)"`
	// OnConflict says what wins when a file a bundle replaces was edited
	// on the gateway: local (the bundle is refused, the conflict
	// reported) or bundle (it is overwritten, and logged).
	OnConflict string `yaml:"on_conflict" enum:"local,bundle" doc:"when a file the bundle replaces was edited on the gateway: local keeps it and refuses the bundle, bundle overwrites it"`
	// GracePeriod is how long a new bundle's pipelines have to run and
	// connect before the previous bundle is brought back.
	GracePeriod time.Duration `yaml:"grace_period" min:">0" max:"24h" doc:"how long a new bundle's pipelines have to be running and connected before the previous bundle comes back"`
	HTTPS       HTTPSConfig   `yaml:"https" doc:"channel https: the URL polled"`
	MQTT        MQTTConfig    `yaml:"mqtt" doc:"channel mqtt: the broker and topics"`
	Kafka       KafkaConfig   `yaml:"kafka" doc:"channel kafka: the cluster and topic"`
	// Heartbeat sends the agent's status upstream; without a sink, none.
	Heartbeat HeartbeatConfig `yaml:"heartbeat" doc:"the agent's status, sent every interval and on every change through a sink"`
}

// HTTPSConfig is the https channel: one URL per target, polled.
type HTTPSConfig struct {
	// URL is the bundle's address; {target} is replaced by each target
	// (all, name/NAME, LABEL/VALUE).
	URL string `yaml:"url" doc:"the bundle's URL; {target} is replaced by each target: all, name/NAME, LABEL/VALUE"`
	// Interval is the time between two polls.
	Interval time.Duration `yaml:"interval" min:"1s" max:"24h" doc:"time between two polls (with If-None-Match: an unchanged bundle costs one 304)"`
	// Token is sent as Authorization: Bearer TOKEN.
	Token string          `yaml:"token" secret:"true" doc:"bearer token sent with every request; use ${file:/path}"`
	TLS   agent.TLSConfig `yaml:"tls" doc:"TLS of the https:// URL"`
}

// MQTTConfig is the mqtt channel: a retained message per target.
type MQTTConfig struct {
	Broker string `yaml:"broker" doc:"broker URL: tcp://, ssl://, mqtts://"`
	// Topic is the bundles' topic; {target} is replaced by each target.
	Topic    string          `yaml:"topic" doc:"retained topic of the bundles; {target} is replaced by each target"`
	Username string          `yaml:"username" doc:"user name"`
	Password string          `yaml:"password" secret:"true" doc:"password; use ${ENV} or ${file:/path}"`
	TLS      agent.TLSConfig `yaml:"tls" doc:"TLS for ssl:// and mqtts:// brokers"`
}

// KafkaConfig is the kafka channel: a compacted topic keyed by target.
type KafkaConfig struct {
	Brokers []string `yaml:"brokers" doc:"seed brokers, host:port"`
	// Topic is compacted, keyed by target: its latest record per target
	// is that target's bundle.
	Topic string          `yaml:"topic" doc:"compacted topic of the bundles, keyed by target"`
	TLS   agent.TLSConfig `yaml:"tls" doc:"TLS to the brokers"`
}

// Defaults of the fleet section.
const (
	DefaultGracePeriod  = 60 * time.Second
	DefaultPollInterval = 60 * time.Second
	DefaultMQTTTopic    = "pspf/fleet/bundles/{target}"
	DefaultKafkaTopic   = "pspf-fleet-bundles"
)

// DefaultConfig is the fleet section where the file is silent.
func DefaultConfig() Config {
	return Config{OnConflict: ConflictLocal, GracePeriod: DefaultGracePeriod,
		HTTPS: HTTPSConfig{Interval: DefaultPollInterval}, MQTT: MQTTConfig{Topic: DefaultMQTTTopic},
		Kafka: KafkaConfig{Topic: DefaultKafkaTopic}, Heartbeat: HeartbeatConfig{Interval: DefaultHeartbeatInterval}}
}

// Validate checks the rules across fields.
func (c *Config) Validate(n agent.Node) {
	if len(c.PublicKeys) == 0 {
		n.Field("public_keys").Errorf("must name at least one public key file: bundles are accepted only signed")
	}
	if tag := leftOut(c.Channel); tag != "" {
		n.Field("channel").Errorf("%s", leftOutMsg(c.Channel))
	}
	switch c.Channel {
	case ChannelHTTPS:
		u, err := url.Parse(c.HTTPS.URL)
		switch {
		case c.HTTPS.URL == "":
			n.Field("https").Field("url").Errorf("must be set for channel https")
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			n.Field("https").Field("url").Errorf("must be an https:// URL, got %q", agent.RedactURL(c.HTTPS.URL))
		case u.Scheme == "http" && !c.HTTPS.TLS.InsecureSkipVerify && !isLoopback(u.Hostname()):
			n.Field("https").Field("url").Errorf("must be https:// (http:// only to loopback): a token sent in clear could be stolen")
		}
	case ChannelMQTT:
		if c.MQTT.Broker == "" {
			n.Field("mqtt").Field("broker").Errorf("must be set for channel mqtt")
		}
		if !strings.Contains(c.MQTT.Topic, "{target}") {
			n.Field("mqtt").Field("topic").Errorf("must hold {target}, got %q", c.MQTT.Topic)
		}
	case ChannelKafka:
		if len(c.Kafka.Brokers) == 0 {
			n.Field("kafka").Field("brokers").Errorf("must list at least one broker for channel kafka")
		}
		if c.Kafka.Topic == "" {
			n.Field("kafka").Field("topic").Errorf("must be set for channel kafka")
		}
	}
}

// leftOut returns the build tag that left channel out of this binary
// (no_mqtt, no_kafka); "" if it is in, or is no channel.
func leftOut(channel string) string {
	switch channel {
	case ChannelMQTT:
		return mqttLeftOut
	case ChannelKafka:
		return kafkaLeftOut
	}
	return ""
}

// Channels returns the channels this binary has, in the order of the
// config's enum: the build tags no_mqtt and no_kafka leave theirs out.
func Channels() []string {
	var out []string
	for _, ch := range []string{ChannelHTTPS, ChannelMQTT, ChannelKafka} {
		if leftOut(ch) == "" {
			out = append(out, ch)
		}
	}
	return out
}

func isLoopback(host string) bool {
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

// ParseConfig decodes the agent file's fleet section (n, present) over
// the defaults.
func ParseConfig(n agent.Node) (Config, error) {
	c := DefaultConfig()
	n.Decode(&c)
	if errs := n.Errors(); errs != nil {
		return c, errs
	}
	return c, nil
}

// Targets are the names an agent takes bundles for: all, name/NAME, and
// LABEL/VALUE for each of its labels, in that order.
func Targets(name string, labels map[string]string) []string {
	out := []string{"all", "name/" + name}
	for _, k := range slices.Sorted(mapKeys(labels)) {
		out = append(out, k+"/"+labels[k])
	}
	return out
}

// CheckTarget checks a target given to fleet push.
func CheckTarget(t string) error {
	if t == "all" {
		return nil
	}
	k, v, ok := strings.Cut(t, "/")
	if !ok || k == "" || v == "" || strings.ContainsAny(t, "+#\x00 ") || strings.Count(t, "/") != 1 {
		return fmt.Errorf("fleet: target %q: want all, name/NAME or LABEL/VALUE", t)
	}
	return nil
}
