package kafka

import (
	"crypto/tls"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the Kafka sink's config.
type Config struct {
	Brokers     []string      `yaml:"brokers" doc:"seed brokers, host:port"`
	Topic       string        `yaml:"topic" required:"true" doc:"topic, or a template over record fields like telemetry.{site}; {_key}, {_source} and {_pipeline} name the record's key, source and pipeline"`
	Encoding    string        `yaml:"encoding" enum:"json,msgpack,raw" doc:"value encoding: json (one object per record), msgpack (the record as stored), raw (the raw payload)"`
	Compression string        `yaml:"compression" enum:"none,gzip,snappy,lz4,zstd" doc:"batch compression codec"`
	Acks        string        `yaml:"acks" enum:"all,1,0" doc:"all (with the idempotent producer), 1 (leader only) or 0 (fire and forget: the cursor advances unconfirmed)"`
	Partitioner string        `yaml:"partitioner" enum:"key,round_robin" doc:"key: records with the same key go to the same partition (keyless ones are spread); round_robin: ignore keys"`
	Linger      time.Duration `yaml:"linger" min:"0" max:"1m" doc:"how long a partition's batch waits for more records before it is sent"`
	// BatchBytes is at least 1 KiB, below which a batch cannot hold a
	// typical record with its headers, and at most 64 MiB; above the
	// broker's default message.max.bytes (1 MiB + overhead) every batch
	// fails.
	BatchBytes agent.ByteSize `yaml:"batch_bytes" min:"1KiB" max:"64MiB" doc:"maximum bytes of one producer batch; must not exceed the broker's message.max.bytes"`
	// MaxBufferedBytes bounds the records (keys, values, headers) the
	// producer holds at once, sent or not; a Write larger than it is sent
	// in parts, each waiting for room. The sink's batches (the pipeline's
	// batch.max_bytes) are what bound its memory first; this keeps the
	// producer's own buffers (requests, compression) within a budget too.
	MaxBufferedBytes agent.ByteSize `yaml:"max_buffered_bytes" doc:"most record bytes the producer holds at once; a larger write waits for room; 0: twice batch_bytes"`
	// ClientID defaults to pspf-edge-<agent>.
	ClientID string `yaml:"client_id" doc:"client id shown in broker logs and quotas; default pspf-edge-<agent>"`
	// AutoCreateTopics lets a produce to a missing topic create it; without
	// it such records wait (missing_topic: retry) or go to the dead letters.
	AutoCreateTopics bool `yaml:"auto_create_topics" doc:"let the broker create missing topics; off: records for a missing topic follow missing_topic"`
	// MissingTopic says what a produce to a topic that does not exist does:
	// retry (the default: the sink shows offline, with the topic in
	// last_error, until the topic is created) or dead_letter (the records
	// go to the dead letters, for topic templates that may name topics that
	// will never exist).
	MissingTopic string `yaml:"missing_topic" enum:"retry,dead_letter" doc:"a topic that does not exist: retry until it is created (the sink shows offline), or send its records to the dead letters"`
	// Unauthorized says what a produce the cluster refuses for want of an
	// ACL (topic, cluster or transactional id) does: retry (the default:
	// the sink shows offline until the ACL is granted) or dead_letter.
	Unauthorized string `yaml:"unauthorized" enum:"retry,dead_letter" doc:"a produce refused by the cluster's ACLs: retry until they allow it (the sink shows offline), or send the records to the dead letters"`
	// ClientMetrics lets the client push its own metrics to brokers that ask
	// for them (KIP-714). Off by default: franz-go compresses each push with
	// lz4 in 4 MiB blocks, an 8 MiB heap spike per push interval on an agent
	// that otherwise runs in under 20 MB, and the pushes cost uplink bytes.
	ClientMetrics  bool          `yaml:"client_metrics" doc:"push the client's own metrics to brokers that ask for them (KIP-714); off: each push briefly takes 8 MiB of heap"`
	DialTimeout    time.Duration `yaml:"dial_timeout" min:">0" doc:"connection timeout"`
	RequestTimeout time.Duration `yaml:"request_timeout" min:">0" doc:"how long the broker may take to answer a produce (acks: all waits for replicas)"`
	// WriteTimeout bounds one Write: records not acknowledged by then are
	// failed and retried by the sink's backoff on a new connection.
	WriteTimeout time.Duration `yaml:"write_timeout" min:">0" doc:"how long one batch may take to be acknowledged before it is retried with backoff on a new connection"`
	// UnreachableAfter is how long a batch may wait on silent brokers
	// before the sink shows as offline: nothing read from any broker for
	// that long, and either connections failing (refused, reset) or a
	// request left unanswered with nothing more to write. The batch keeps
	// waiting (and franz-go retrying) until write_timeout. A slow uplink
	// still moves bytes and a healthy broker answers in milliseconds: only
	// a cluster that is gone, or hangs, stays silent this long.
	UnreachableAfter time.Duration   `yaml:"unreachable_after" min:">0" doc:"how long a batch may wait on silent brokers (connections refused or reset, requests unanswered) before the sink shows offline; the batch keeps waiting until write_timeout"`
	TLS              agent.TLSConfig `yaml:"tls" doc:"TLS to the brokers: on with enabled: true or any other tls setting (a ca_file implies TLS)"`
	SASL             SASLConfig      `yaml:"sasl"`
	// Delivery is at_least_once (default) or exactly_once.
	Delivery string `yaml:"delivery" enum:"at_least_once,exactly_once" doc:"at_least_once: duplicates after a crash carry the same pspf-id; exactly_once: transactions that commit the sink's cursor to Kafka, or, after a kafka source in a group, one transaction per checkpoint with the outputs, the state's changelog and the input offsets"`
	// TransactionalID defaults to pspf-<agent>-<pipeline>-<sink>; it must be
	// unique per agent, pipeline and sink, and stable across restarts.
	TransactionalID string `yaml:"transactional_id" doc:"exactly_once: the producer's transactional id; default pspf-<agent>-<pipeline>-<sink>"`
	// CursorTopic holds one compacted record per agent, pipeline and sink.
	CursorTopic string `yaml:"cursor_topic" doc:"exactly_once: compacted topic that holds the sink's cursor, created if missing"`
}

// deadLetter is the missing_topic / unauthorized value that makes those
// errors permanent.
const deadLetter = "dead_letter"

// SASLConfig authenticates the client.
type SASLConfig struct {
	Mechanism string `yaml:"mechanism" enum:",plain,scram-sha-256,scram-sha-512" doc:"empty for none, plain, scram-sha-256 or scram-sha-512"`
	Username  string `yaml:"username" doc:"user name"`
	Password  string `yaml:"password" secret:"true" doc:"password; use ${ENV} or ${file:/path}"`
}

// Defaults returns the defaults: JSON values, lz4, acks all with the
// idempotent producer, key partitioning, 5ms linger, at-least-once, and a
// missing topic or ACL retried.
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
		// Offline within 5s of the cluster going away, with the tick's
		// granularity to spare.
		UnreachableAfter: 3 * time.Second,
		MissingTopic:     "retry",
		Unauthorized:     "retry",
		Delivery:         "at_least_once",
		CursorTopic:      "__pspf_cursors",
	}
}

// Validate checks the config beyond its fields' tags.
func (c *Config) Validate(n agent.Node) {
	if len(c.Brokers) == 0 {
		n.Field("brokers").Errorf("must list at least one broker")
	}
	for i, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			n.Field("brokers").Index(i).Errorf("must be host:port, got %q", b)
		}
	}
	if _, err := agent.ParseTemplate(c.Topic); c.Topic != "" && err != nil {
		n.Field("topic").Errorf("%v", err)
	}
	// A record larger than the producer's buffer could never be sent; one
	// larger than batch_bytes cannot be sent anyway.
	if c.MaxBufferedBytes != 0 && (c.MaxBufferedBytes < c.BatchBytes || c.MaxBufferedBytes > 1<<30) {
		n.Field("max_buffered_bytes").Errorf("must be 0 (twice batch_bytes) or between batch_bytes (%d bytes) and 1GiB, got %q", int64(c.BatchBytes), n.Field("max_buffered_bytes").Text())
	}
	if c.WriteTimeout > 0 && c.RequestTimeout > c.WriteTimeout {
		n.Field("write_timeout").Errorf("must be at least request_timeout (%s), got %q", c.RequestTimeout, n.Field("write_timeout").Text())
	}
	// Under 100ms a healthy round trip over a mobile uplink would count as
	// an outage; beyond write_timeout the batch has been retried already
	// (left unset, it is at most write_timeout).
	if f := n.Field("unreachable_after"); f.Present() && c.UnreachableAfter > 0 && (c.UnreachableAfter < 100*time.Millisecond || c.UnreachableAfter > c.WriteTimeout) {
		n.Field("unreachable_after").Errorf("must be between 100ms and write_timeout (%s), got %q", c.WriteTimeout, n.Field("unreachable_after").Text())
	}
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

// tlsConfig loads the certificates; nil when TLS is off. Brokers are
// host:port, without a scheme: enabled or any other tls setting switches
// TLS on (agent.TLSConfig).
func tlsConfig(c agent.TLSConfig) (*tls.Config, error) {
	on, err := c.On("")
	if err != nil || !on {
		return nil, err
	}
	return c.Build()
}
