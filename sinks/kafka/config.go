package kafka

import (
	"crypto/tls"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the Kafka sink's config.
type Config struct {
	Brokers     []string       `yaml:"brokers" doc:"seed brokers, host:port"`
	Topic       string         `yaml:"topic" doc:"topic, or a template over record fields like telemetry.{site}; {_key}, {_source} and {_pipeline} name the record's key, source and pipeline"`
	Encoding    string         `yaml:"encoding" enum:"json,msgpack,raw" doc:"value encoding: json (one object per record), msgpack (the record as stored), raw (the raw payload)"`
	Compression string         `yaml:"compression" enum:"none,gzip,snappy,lz4,zstd" doc:"batch compression codec"`
	Acks        string         `yaml:"acks" enum:"all,1,0" doc:"all (with the idempotent producer), 1 (leader only) or 0 (fire and forget: the cursor advances unconfirmed)"`
	Partitioner string         `yaml:"partitioner" enum:"key,round_robin" doc:"key: records with the same key go to the same partition (keyless ones are spread); round_robin: ignore keys"`
	Linger      time.Duration  `yaml:"linger" doc:"how long a partition's batch waits for more records before it is sent"`
	BatchBytes  agent.ByteSize `yaml:"batch_bytes" doc:"maximum bytes of one producer batch; must not exceed the broker's message.max.bytes"`
	// ClientID defaults to pspf-edge-<agent>.
	ClientID string `yaml:"client_id" doc:"client id shown in broker logs and quotas; default pspf-edge-<agent>"`
	// AutoCreateTopics lets a produce to a missing topic create it; without it
	// such records are not retryable and go to the dead letters.
	AutoCreateTopics bool `yaml:"auto_create_topics" doc:"let the broker create missing topics; off: records for a missing topic go to the dead letters"`
	// ClientMetrics lets the client push its own metrics to brokers that ask
	// for them (KIP-714). Off by default: franz-go compresses each push with
	// lz4 in 4 MiB blocks, an 8 MiB heap spike per push interval on an agent
	// that otherwise runs in under 20 MB, and the pushes cost uplink bytes.
	ClientMetrics  bool          `yaml:"client_metrics" doc:"push the client's own metrics to brokers that ask for them (KIP-714); off: each push briefly takes 8 MiB of heap"`
	DialTimeout    time.Duration `yaml:"dial_timeout" doc:"connection timeout"`
	RequestTimeout time.Duration `yaml:"request_timeout" doc:"how long the broker may take to answer a produce (acks: all waits for replicas)"`
	// WriteTimeout bounds one Write: records not acknowledged by then are
	// failed and retried by the sink's backoff, so an unreachable cluster
	// shows as offline instead of hanging.
	WriteTimeout time.Duration `yaml:"write_timeout" doc:"how long one batch may take to be acknowledged before it is retried with backoff"`
	TLS          TLSConfig     `yaml:"tls"`
	SASL         SASLConfig    `yaml:"sasl"`
	// Delivery is at_least_once (default) or exactly_once.
	Delivery string `yaml:"delivery" enum:"at_least_once,exactly_once" doc:"at_least_once: duplicates after a crash carry the same pspf-id; exactly_once: transactions that commit the sink's cursor to Kafka"`
	// TransactionalID defaults to pspf-<agent>-<pipeline>-<sink>; it must be
	// unique per agent, pipeline and sink, and stable across restarts.
	TransactionalID string `yaml:"transactional_id" doc:"exactly_once: the producer's transactional id; default pspf-<agent>-<pipeline>-<sink>"`
	// CursorTopic holds one compacted record per agent, pipeline and sink.
	CursorTopic string `yaml:"cursor_topic" doc:"exactly_once: compacted topic that holds the sink's cursor, created if missing"`
}

// TLSConfig is the client side of TLS.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled" doc:"connect with TLS"`
	CAFile             string `yaml:"ca_file" doc:"PEM file of the CAs that sign the brokers' certificates; default: the system pool"`
	CertFile           string `yaml:"cert_file" doc:"PEM client certificate, for brokers that require one"`
	KeyFile            string `yaml:"key_file" doc:"PEM key of the client certificate"`
	ServerName         string `yaml:"server_name" doc:"name to verify in the brokers' certificates; default: the host dialled"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the brokers' certificates (tests only)"`
}

// SASLConfig authenticates the client.
type SASLConfig struct {
	Mechanism string `yaml:"mechanism" enum:",plain,scram-sha-256,scram-sha-512" doc:"empty for none, plain, scram-sha-256 or scram-sha-512"`
	Username  string `yaml:"username" doc:"user name"`
	Password  string `yaml:"password" doc:"password; use ${ENV} or ${file:/path}"`
}

// Defaults returns the defaults: JSON values, lz4, acks all with the
// idempotent producer, key partitioning, 5ms linger, at-least-once.
func Defaults() *Config {
	return &Config{
		Encoding:       "json",
		Compression:    "lz4",
		Acks:           "all",
		Partitioner:    "key",
		Linger:         5 * time.Millisecond,
		BatchBytes:     1 << 20,
		DialTimeout:    10 * time.Second,
		RequestTimeout: 10 * time.Second,
		WriteTimeout:   30 * time.Second,
		Delivery:       "at_least_once",
		CursorTopic:    "__pspf_cursors",
	}
}

// Validate checks the config.
func (c *Config) Validate(n agent.Node) {
	if len(c.Brokers) == 0 {
		n.Field("brokers").Errorf("must list at least one broker")
	}
	for i, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			n.Field("brokers").Index(i).Errorf("must be host:port, got %q", b)
		}
	}
	if c.Topic == "" {
		n.Field("topic").Errorf("must not be empty")
	} else if _, err := agent.ParseTemplate(c.Topic); err != nil {
		n.Field("topic").Errorf("%v", err)
	}
	// A batch below 1KiB cannot hold a typical record with its headers; above
	// the broker's default message.max.bytes (1MiB + overhead) every batch fails.
	if c.BatchBytes < 1<<10 || c.BatchBytes > 64<<20 {
		n.Field("batch_bytes").Errorf("must be between 1KiB and 64MiB, got %q", n.Field("batch_bytes").Text())
	}
	if c.Linger < 0 || c.Linger > time.Minute {
		n.Field("linger").Errorf("must be between 0 and 1m, got %q", n.Field("linger").Text())
	}
	for key, d := range map[string]time.Duration{"dial_timeout": c.DialTimeout, "request_timeout": c.RequestTimeout, "write_timeout": c.WriteTimeout} {
		if d <= 0 {
			n.Field(key).Errorf("must be positive, got %q", n.Field(key).Text())
		}
	}
	if c.WriteTimeout > 0 && c.RequestTimeout > c.WriteTimeout {
		n.Field("write_timeout").Errorf("must be at least request_timeout (%s), got %q", c.RequestTimeout, n.Field("write_timeout").Text())
	}
	c.TLS.files().Check(n.Field("tls"))
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		n.Field("sasl").Field("username").Errorf("must not be empty with a SASL mechanism")
	}
	if c.Delivery == "exactly_once" {
		if c.Acks != "all" {
			n.Field("acks").Errorf("must be all with delivery: exactly_once, got %q", c.Acks)
		}
		if c.CursorTopic == "" {
			n.Field("cursor_topic").Errorf("must not be empty with delivery: exactly_once")
		}
	}
}

// files returns the PEM files the settings name.
func (c *TLSConfig) files() agent.TLSFiles {
	return agent.TLSFiles{CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
}

// tlsConfig loads the certificates; nil when TLS is off.
func (c *TLSConfig) tlsConfig() (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented as tests only
	if err := c.files().Apply(tc); err != nil {
		return nil, err
	}
	return tc, nil
}
