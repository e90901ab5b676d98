package kafka

import (
	"crypto/tls"
	"sort"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the Kafka source's config.
type Config struct {
	Brokers []string `yaml:"brokers" doc:"seed brokers, host:port"`
	// Topics are consumed as a member of Group: the group's members share
	// the partitions (cooperative-sticky rebalancing).
	Topics []string `yaml:"topics" doc:"topics to consume as a member of the consumer group; the group's members share their partitions"`
	// Partitions are consumed directly, without group membership; Group
	// then only names where the offsets are committed.
	Partitions map[string][]int32 `yaml:"partitions" doc:"instead of topics: the partitions to consume, by topic, without joining the group (the group only holds the committed offsets)"`
	// Group defaults to pspf-edge-<agent>-<pipeline>-<source>: every agent
	// reads every partition. Agents that share a group share the partitions.
	Group string `yaml:"group" doc:"consumer group whose committed offsets the source starts from and commits to; default pspf-edge-<agent>-<pipeline>-<source>; agents with the same group share the partitions"`
	// StaticMembership gives the member a stable instance id, so that an
	// agent that restarts (a crash, an upgrade, a reload) takes its
	// partitions back at once instead of after a rebalance.
	StaticMembership bool   `yaml:"static_membership" doc:"join with a stable group.instance.id: a restarted agent gets its partitions back at once, without a rebalance (KIP-345)"`
	InstanceID       string `yaml:"instance_id" doc:"the static member's id; default pspf-edge-<agent>-<pipeline>-<source>; unique per agent"`
	// Start applies to a partition without a committed offset in Group.
	Start string `yaml:"start" enum:"earliest,latest" doc:"where a partition without a committed offset starts: earliest (nothing skipped) or latest (only records produced from now on)"`
	// CommitInterval bounds how often offsets are committed; only offsets
	// of records durable in the pipeline log are ever committed. Below 10ms
	// a commit per group commit of the log; beyond an hour a crash replays
	// more than any topic's traffic is worth.
	CommitInterval time.Duration `yaml:"commit_interval" min:"10ms" max:"1h" doc:"most often the offsets of durable records are committed; a crash replays at most this much"`
	BatchSize      int           `yaml:"batch_size" min:"1" max:"65536" doc:"most records per batch handed to the pipeline"`
	// MaxInFlightBytes bounds the records read and not yet durable. Below
	// 64 KiB every few records wait for an fsync; 1 GiB is far beyond the
	// memory of the boards the agent runs on.
	MaxInFlightBytes agent.ByteSize `yaml:"max_in_flight_bytes" min:"64KiB" max:"1GiB" doc:"bytes of records read and not yet durable (key, value, headers and 128 bytes each) before the source stops reading; a larger record is taken alone"`
	// MaxPayload is the largest record (key, value and headers) the source
	// takes; larger ones are dropped, counted and committed past: the
	// pipeline log could not store them. 16 MiB is the largest raw payload
	// a record may hold in the log.
	MaxPayload agent.ByteSize `yaml:"max_payload" min:"1KiB" max:"16MiB" doc:"larger records (key, value and headers) are dropped, counted and committed past; keep it below the log's max_record_bytes"`
	// FetchMaxBytes and MaxConcurrentFetches bound what franz-go buffers.
	FetchMaxBytes          agent.ByteSize `yaml:"fetch_max_bytes" min:"1KiB" max:"256MiB" doc:"most bytes one fetch asks a broker for (a single larger record batch still comes whole)"`
	FetchMaxPartitionBytes agent.ByteSize `yaml:"fetch_max_partition_bytes" doc:"most bytes one fetch asks for per partition; at most fetch_max_bytes"`
	MaxConcurrentFetches   int            `yaml:"max_concurrent_fetches" min:"1" max:"64" doc:"fetches in flight or buffered at once; with fetch_max_bytes it bounds the client's buffers"`
	FetchMaxWait           time.Duration  `yaml:"fetch_max_wait" min:"10ms" max:"30s" doc:"how long a broker may hold a fetch waiting for records: the latency of an idle topic"`
	Isolation              string         `yaml:"isolation" enum:"read_committed,read_uncommitted" doc:"read_committed skips records of aborted transactions and waits for open ones; read_uncommitted reads everything"`
	// Metadata and Headers choose the fields each record gets.
	Metadata bool   `yaml:"metadata" doc:"add the fields kafka.topic, kafka.partition, kafka.offset, kafka.timestamp (Unix ms) and kafka.key (when the record has one)"`
	Headers  bool   `yaml:"headers" doc:"add each header as the field kafka.header.<name>: a string when it is UTF-8, else bytes; at most 64"`
	ClientID string `yaml:"client_id" doc:"client id shown in broker logs and quotas; default pspf-edge-<agent>"`
	// Group timing: see Kafka's session.timeout.ms, rebalance.timeout.ms
	// and heartbeat.interval.ms.
	SessionTimeout    time.Duration `yaml:"session_timeout" min:">0" doc:"a member silent this long leaves the group (within the brokers' group.min/max.session.timeout.ms)"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout" min:">0" doc:"how long members may take to rejoin in a rebalance; a revoked partition's batches wait up to half of it to become durable"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval" min:">0" doc:"time between heartbeats to the group coordinator"`
	DialTimeout       time.Duration `yaml:"dial_timeout" min:">0" doc:"connection timeout"`
	RequestTimeout    time.Duration `yaml:"request_timeout" min:">0" doc:"how long a broker may take to answer a request (beyond fetch_max_wait for fetches); commits and the connect check wait this long"`
	// UnreachableAfter is how long the brokers may be silent before the
	// source reports them unreachable.
	UnreachableAfter time.Duration   `yaml:"unreachable_after" min:">0" doc:"how long the brokers may be silent (connections refused or reset, requests unanswered) before the source reports them unreachable in last_error"`
	MaxRetryBackoff  time.Duration   `yaml:"max_retry_backoff" min:">0" doc:"cap of the exponential backoff, with jitter, between retries of failed requests and connections"`
	TLS              agent.TLSConfig `yaml:"tls" doc:"TLS to the brokers: on with enabled: true or any other tls setting (a ca_file implies TLS)"`
	SASL             SASLConfig      `yaml:"sasl"`
}

// SASLConfig authenticates the client.
type SASLConfig struct {
	Mechanism string `yaml:"mechanism" enum:",plain,scram-sha-256,scram-sha-512" doc:"empty for none, plain, scram-sha-256 or scram-sha-512"`
	Username  string `yaml:"username" doc:"user name"`
	Password  string `yaml:"password" secret:"true" doc:"password; use ${ENV} or ${file:/path}; masked wherever the agent shows text"`
}

// Defaults returns the defaults: static membership, the earliest offset
// for new partitions, read_committed, commits at most once a second, and
// buffers of a few MiB.
func Defaults() *Config {
	return &Config{
		StaticMembership: true,
		Start:            "earliest",
		CommitInterval:   time.Second,
		BatchSize:        500,
		// 2 MiB is what the MQTT source holds in flight too: at 200k
		// records/s of 100 bytes, ten times what one group commit (10ms)
		// covers.
		MaxInFlightBytes:       2 << 20,
		MaxPayload:             512 << 10,
		FetchMaxBytes:          1 << 20,
		FetchMaxPartitionBytes: 1 << 20,
		MaxConcurrentFetches:   2,
		FetchMaxWait:           500 * time.Millisecond,
		Isolation:              "read_committed",
		Metadata:               true,
		Headers:                true,
		SessionTimeout:         45 * time.Second,
		RebalanceTimeout:       60 * time.Second,
		HeartbeatInterval:      3 * time.Second,
		DialTimeout:            10 * time.Second,
		RequestTimeout:         10 * time.Second,
		UnreachableAfter:       3 * time.Second,
		MaxRetryBackoff:        10 * time.Second,
	}
}

// Validate checks the config. The limits keep the source's memory bounded
// in bytes: max_concurrent_fetches × fetch_max_bytes in franz-go's
// buffers, max_in_flight_bytes in the pipeline's hands.
func (c *Config) Validate(n agent.Node) {
	if len(c.Brokers) == 0 {
		n.Field("brokers").Errorf("must list at least one broker")
	}
	for i, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			n.Field("brokers").Index(i).Errorf("must be host:port, got %q", b)
		}
	}
	switch {
	case len(c.Topics) == 0 && len(c.Partitions) == 0:
		n.Field("topics").Errorf("must list at least one topic (or give partitions)")
	case len(c.Topics) > 0 && len(c.Partitions) > 0:
		n.Field("partitions").Errorf("must not be set with topics: a source consumes as a group member (topics) or directly (partitions)")
	}
	for i, t := range c.Topics {
		if msg := checkTopic(t); msg != "" {
			n.Field("topics").Index(i).Errorf("%s, got %q", msg, t)
		}
	}
	for _, t := range sortedTopics(c.Partitions) {
		pn := n.Field("partitions").Field(t)
		if msg := checkTopic(t); msg != "" {
			pn.Errorf("%s, got %q", msg, t)
		}
		if len(c.Partitions[t]) == 0 {
			pn.Errorf("must list at least one partition")
		}
		seen := map[int32]bool{}
		for i, p := range c.Partitions[t] {
			if p < 0 || seen[p] {
				pn.Index(i).Errorf("must be a partition number (0 or more), each once, got %d", p)
			}
			seen[p] = true
		}
	}
	if c.StaticMembership && len(c.Partitions) > 0 && n.Field("static_membership").Present() {
		n.Field("static_membership").Errorf("only applies to group members (topics), not to partitions")
	}
	if c.FetchMaxPartitionBytes < 1<<10 || c.FetchMaxPartitionBytes > c.FetchMaxBytes {
		n.Field("fetch_max_partition_bytes").Errorf("must be between 1KiB and fetch_max_bytes (%d bytes), got %q", int64(c.FetchMaxBytes), n.Field("fetch_max_partition_bytes").Text())
	}
	if c.HeartbeatInterval > 0 && c.SessionTimeout > 0 && c.HeartbeatInterval*3 > c.SessionTimeout {
		n.Field("heartbeat_interval").Errorf("must be at most a third of session_timeout (%s), got %q", c.SessionTimeout, n.Field("heartbeat_interval").Text())
	}
	// A healthy broker answers an idle fetch after fetch_max_wait: the
	// brokers are silent only if they say nothing for twice as long.
	if c.UnreachableAfter > 0 && c.UnreachableAfter < 2*c.FetchMaxWait {
		n.Field("unreachable_after").Errorf("must be at least twice fetch_max_wait (%s), got %q", c.FetchMaxWait, n.Field("unreachable_after").Text())
	}
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		n.Field("sasl").Field("username").Errorf("must not be empty with a SASL mechanism")
	}
}

// checkTopic returns what is wrong with a topic name, or "" (Kafka's rule:
// 1 to 249 characters of ASCII letters, digits, '.', '_' and '-').
func checkTopic(t string) string {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return "must be a topic name of 1 to 249 characters"
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return "must hold only letters, digits, '.', '_' and '-'"
		}
	}
	return ""
}

// sortedTopics returns the map's topics in order, for stable messages.
func sortedTopics(m map[string][]int32) []string {
	out := make([]string, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
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
