package runner

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/buffer"
)

// AgentConfig is the agent's own file: where it keeps data, where it listens,
// how it logs, and the defaults every pipeline starts from.
type AgentConfig struct {
	// Name identifies the agent upstream (Kafka headers, MQTT client ids). Default: the host name.
	Name string `yaml:"name" doc:"identifies this agent upstream (headers, client ids); default: the host name"`
	// DataDir holds pipeline logs, outboxes, state and checkpoints.
	DataDir string `yaml:"data_dir" doc:"directory for logs, outboxes, state and checkpoints"`
	// PipelinesDir holds one YAML file per pipeline.
	PipelinesDir string `yaml:"pipelines_dir" doc:"directory with one YAML file per pipeline"`
	// Admin is the admin HTTP server.
	Admin AdminConfig `yaml:"admin"`
	// Log configures the agent's log output.
	Log LogConfig `yaml:"log"`
	// ShutdownTimeout bounds a clean shutdown: draining sources, flushing and
	// closing sinks. What is not delivered by then stays in the logs on disk.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" doc:"how long a clean shutdown may take to drain and flush"`
	// RemovedDrainTimeout bounds how long a pipeline whose file was removed
	// may deliver its backlog before it stops. What remains stays on disk,
	// reported by status, until `pspf-edge buffer drop NAME`.
	RemovedDrainTimeout time.Duration `yaml:"removed_drain_timeout" doc:"how long a removed pipeline may drain its backlog before it stops"`
	// ReloadDebounce is how long the pipelines directory must be quiet after
	// a change before it is read: editors and tools save in several steps.
	ReloadDebounce time.Duration `yaml:"reload_debounce" doc:"quiet time after a file change before pipelines are reloaded"`
	// MemoryLimit is the Go runtime's soft memory limit
	// (runtime/debug.SetMemoryLimit): near it the garbage collector runs
	// more often and returns freed pages to the system sooner, trading CPU
	// for resident memory. It is soft: a live heap above it is not an
	// error, the collector only works harder. 0 means no limit. The
	// GOMEMLIMIT environment variable, when set, wins.
	MemoryLimit agent.ByteSize `yaml:"memory_limit" doc:"soft limit of the Go runtime's memory (heap, stacks); 0 is none; GOMEMLIMIT wins"`
	// GCPercent is the garbage collector's target (runtime/debug.SetGCPercent,
	// GOGC): the heap may grow by this percentage of the live heap before a
	// collection. Lower means less memory and more CPU; -1 collects only
	// near MemoryLimit. The GOGC environment variable, when set, wins.
	GCPercent int `yaml:"gc_percent" doc:"heap growth in percent of the live heap before a collection (GOGC); -1 only near memory_limit; GOGC wins"`
	// MaxProcs is how many CPUs execute the agent's Go code at once
	// (runtime.GOMAXPROCS); 0 means all of them. The default is one: the
	// agent needs well under a core at full rate, the MQTT broker on the
	// same gateway needs the rest, and each further processor costs memory
	// of its own (caches, collector buffers, threads); the README's
	// Performance section has the measurement. The GOMAXPROCS environment
	// variable, when set, wins.
	MaxProcs int `yaml:"max_procs" doc:"CPUs that run the agent's code at once (GOMAXPROCS); 0: all; GOMAXPROCS wins"`
	// TimerSlack is how late the kernel may end the agent's timed sleeps,
	// to end several with one wake-up (Linux's timer slack, systemd's
	// TimerSlackNSec). The default, 1ms, takes about a sixth off the CPU
	// per record at low rates: the Go runtime's monitor thread sleeps 20 µs
	// at a time while the agent works, and with the kernel's default of
	// 50 µs each of those sleeps is a wake-up of its own. The agent's own
	// timers are milliseconds or more. 0 leaves the slack the agent was
	// started with. Read at start; the agent executes itself again to give
	// it to every thread (cmd/pspf-edge, adoptTimerSlack).
	TimerSlack time.Duration `yaml:"timer_slack" doc:"how late the kernel may end the agent's timed sleeps to save wake-ups (Linux timer slack); 0 leaves it as started; read at start"`
	// Defaults apply to every pipeline that does not set its own.
	Defaults Defaults `yaml:"defaults"`
	// Labels describe the agent to its fleet (site: plant-3, role:
	// boiler): a bundle pushed to LABEL/VALUE reaches every agent with
	// that label. Read at start.
	Labels map[string]string `yaml:"labels" doc:"labels of this agent in its fleet (site: plant-3): bundles pushed to site/plant-3 reach it; read at start"`
	// Fleet is the fleet section (agent/fleet.Config), decoded by the
	// fleet package; absent, the agent takes no bundles. Read at start.
	Fleet agent.Node `yaml:"fleet" doc:"where signed pipeline bundles come from (docs/fleet.md); read at start"`
}

// DefaultMemoryLimit and DefaultGCPercent are the defaults of memory_limit
// and gc_percent. The agent's live heap at full
// rate in the end-to-end benchmark is about 6 MiB and the runtime's whole
// memory (heap, stacks, collector data) about 13 MiB. A limit near that made
// the collector run continuously (CPU per record x1.4 at 16 MiB, x3 at
// 12 MiB, x5 at 10 MiB) without lowering the peak resident memory, so the
// default only caps a burst: it does not bind at the benchmark's loads.
const (
	DefaultMemoryLimit agent.ByteSize = 24 << 20
	DefaultGCPercent                  = 100
)

// DefaultMaxProcs is the default of max_procs (see AgentConfig.MaxProcs).
const DefaultMaxProcs = 1

// DefaultTimerSlack is the default of timer_slack (see
// AgentConfig.TimerSlack); MaxTimerSlack is the most it may be.
const (
	DefaultTimerSlack = time.Millisecond
	MaxTimerSlack     = 100 * time.Millisecond
)

// AdminConfig is the admin HTTP server's config. The API is read-only;
// beyond loopback it should have a token and TLS (docs/security.md).
type AdminConfig struct {
	// Address to listen on; loopback by default so that it is not exposed. Empty disables it.
	Address string `yaml:"address" doc:"listen address of the admin HTTP server; empty disables it"`
	// Token, when set, is the bearer token every request but /healthz
	// must carry (Authorization: Bearer TOKEN). Written as
	// ${file:/path}, it is read again at every reload (SIGHUP), which is
	// how it is rotated.
	Token string `yaml:"token" secret:"true" doc:"bearer token every request but /healthz must carry (Authorization: Bearer ...); use ${file:/path}; a reload (SIGHUP) reads it again"`
	// TLS, when set, serves the API over HTTPS.
	TLS AdminTLSConfig `yaml:"tls" doc:"serve the API over HTTPS with this certificate"`
	// AllowedHosts are the host names, besides IP addresses and
	// localhost, that a request's Host header may name: a browser on the
	// gateway sends the name it resolved, and a name that is not the
	// agent's own is a DNS rebinding attempt.
	AllowedHosts []string `yaml:"allowed_hosts" doc:"host names a request may be addressed to besides IP addresses and localhost (DNS rebinding protection), like gw-17.local"`
}

// AdminTLSConfig is the admin API's certificate. Both files are read
// again when they change, so a renewed certificate takes effect without a
// restart.
type AdminTLSConfig struct {
	CertFile string `yaml:"cert_file" doc:"PEM certificate (with its chain) of the admin API"`
	KeyFile  string `yaml:"key_file" doc:"PEM key of the certificate"`
}

// minAdminToken is the shortest admin token accepted: a token short enough
// to guess protects nothing.
const minAdminToken = 16

// Validate checks the admin settings: a token long enough and of
// printable characters, a certificate and key that load as a pair, host
// names without a scheme or a path.
func (c *AdminConfig) Validate(n agent.Node) {
	if c.Token != "" {
		if len(c.Token) < minAdminToken {
			n.Field("token").Errorf("must be at least %d characters (a short token can be guessed), got %d", minAdminToken, len(c.Token))
		}
		for _, r := range c.Token {
			if r <= ' ' || r == 0x7f {
				n.Field("token").Errorf("must be printable characters without spaces")
				break
			}
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		n.Field("tls").Errorf("cert_file and key_file go together")
	} else if c.TLS.CertFile != "" {
		if _, err := loadKeyPair(c.TLS.CertFile, c.TLS.KeyFile, n.ReadFile); err != nil {
			n.Field("tls").Field("cert_file").Errorf("%v", err)
		}
	}
	for i, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/: \t") {
			n.Field("allowed_hosts").Index(i).Errorf("must be a host name like gw-17.local, without a port, got %q", h)
		}
	}
}

// loadKeyPair loads a certificate and its key with read.
func loadKeyPair(certFile, keyFile string, read func(string) ([]byte, error)) (tls.Certificate, error) {
	certPEM, err := read(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := read(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("the certificate %s and key %s do not load as a pair: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// LogConfig sets the log level and format.
type LogConfig struct {
	Level  string `yaml:"level" enum:"debug,info,warn,error" doc:"least severe level logged"`
	Format string `yaml:"format" enum:"text,json" doc:"text (key=value) or json lines"`
}

// SlogLevel returns Level as a slog.Level.
func (c LogConfig) SlogLevel() (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Level)); err != nil {
		return lv, fmt.Errorf("log level %q: must be debug, info, warn or error", c.Level)
	}
	return lv, nil
}

// Defaults are the pipeline settings applied where a pipeline file is silent.
type Defaults struct {
	Buffer     BufferConfig     `yaml:"buffer"`
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
}

// DefaultAgentConfig returns the configuration used where the agent file is
// silent, or when there is none.
func DefaultAgentConfig() AgentConfig {
	host, _ := os.Hostname()
	if host == "" {
		host = "pspf-edge"
	}
	return AgentConfig{
		Name:                host,
		DataDir:             "/var/lib/pspf-edge",
		PipelinesDir:        "/etc/pspf-edge/pipelines",
		Admin:               AdminConfig{Address: "127.0.0.1:8377"},
		Log:                 LogConfig{Level: "info", Format: "text"},
		ShutdownTimeout:     15 * time.Second,
		RemovedDrainTimeout: 30 * time.Second,
		ReloadDebounce:      200 * time.Millisecond,
		MemoryLimit:         DefaultMemoryLimit,
		GCPercent:           DefaultGCPercent,
		MaxProcs:            DefaultMaxProcs,
		TimerSlack:          DefaultTimerSlack,
		Defaults:            Defaults{Buffer: DefaultBufferConfig()},
	}
}

// Validate checks the agent config's rules.
func (c *AgentConfig) Validate(n agent.Node) {
	if c.DataDir == "" {
		n.Field("data_dir").Errorf("must not be empty")
	}
	if c.ShutdownTimeout <= 0 {
		n.Field("shutdown_timeout").Errorf("must be positive, got %q", n.Field("shutdown_timeout").Text())
	}
	if c.RemovedDrainTimeout < 0 {
		n.Field("removed_drain_timeout").Errorf("must not be negative, got %q", n.Field("removed_drain_timeout").Text())
	}
	if c.ReloadDebounce < 0 || c.ReloadDebounce > time.Minute {
		n.Field("reload_debounce").Errorf("must be between 0 and 1m, got %q", n.Field("reload_debounce").Text())
	}
	// Below a few MiB the runtime's own overhead alone passes the limit and
	// the collector would run continuously.
	if c.MemoryLimit != 0 && c.MemoryLimit < 4<<20 {
		n.Field("memory_limit").Errorf("must be 0 (none) or at least 4MiB, got %q", n.Field("memory_limit").Text())
	}
	if c.GCPercent < -1 || c.GCPercent == 0 || c.GCPercent > 1000 {
		n.Field("gc_percent").Errorf("must be -1 (off) or between 1 and 1000, got %q", n.Field("gc_percent").Text())
	}
	if c.MaxProcs < 0 || c.MaxProcs > 1024 {
		n.Field("max_procs").Errorf("must be 0 (all CPUs) or between 1 and 1024, got %q", n.Field("max_procs").Text())
	}
	if c.TimerSlack < 0 || c.TimerSlack > MaxTimerSlack {
		n.Field("timer_slack").Errorf("must be between 0 (as started) and %v, got %q", MaxTimerSlack, n.Field("timer_slack").Text())
	}
	if c.GCPercent == -1 && c.MemoryLimit == 0 {
		n.Field("gc_percent").Errorf("-1 needs a memory_limit, or the heap grows without bound")
	}
}

// LoadAgentConfig reads the agent file at path over the defaults. An empty path
// means no file: the defaults.
func LoadAgentConfig(path string) (AgentConfig, error) {
	cfg := DefaultAgentConfig()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	root := agent.ParseConfig(path, data, os.LookupEnv, nil)
	if root.Present() {
		root.Decode(&cfg)
	}
	if errs := root.Errors(); errs != nil {
		return cfg, errs
	}
	return cfg, nil
}

// BufferConfig configures a pipeline log: how much it may hold, what happens
// when it is full, and how often it reaches the disk.
type BufferConfig struct {
	Kind         string         `yaml:"type" enum:"disk,memory" doc:"disk, or memory (spills to disk beyond memory_bytes)"`
	MaxBytes     agent.ByteSize `yaml:"max_bytes" doc:"byte cap of the log on disk"`
	MaxAge       time.Duration  `yaml:"max_age" doc:"records older than this are dropped; 0 keeps them"`
	Overflow     string         `yaml:"overflow" enum:"block,drop_oldest,drop_newest" doc:"what happens when the cap is reached"`
	Sync         string         `yaml:"sync" enum:"batch,interval,none" doc:"fsync per batch, per interval, or never"`
	SyncInterval time.Duration  `yaml:"sync_interval" doc:"sync: interval: the longest a record waits for its fsync (and its source for the ack); sooner when 32 KiB wait, the sources pause for their acks or their batches come further apart than the time left"`
	AckInterval  time.Duration  `yaml:"ack_interval" doc:"how often each sink's acked position is written to disk while it moves by 1,000 records or more (ten intervals for a smaller move): a longer interval writes less to the flash; after a crash or power cut a sink sends again at most 1,000 records or those it acked in the last interval, whichever is more"`
	SegmentBytes agent.ByteSize `yaml:"segment_bytes" doc:"size at which a segment file is sealed"`
	MemoryBytes  agent.ByteSize `yaml:"memory_bytes" doc:"memory budget of a type: memory log"`
}

// DefaultBufferConfig is the pipeline log config where nothing else is said.
func DefaultBufferConfig() BufferConfig {
	return BufferConfig{
		Kind:         "disk",
		MaxBytes:     256 << 20,
		Overflow:     "block",
		Sync:         "interval",
		SyncInterval: time.Second,
		AckInterval:  buffer.DefaultAckInterval,
		SegmentBytes: 16 << 20,
		MemoryBytes:  4 << 20,
	}
}

// Validate checks the buffer's limits, then asks the buffer package whether
// it would open a log with them (max_bytes at least twice segment_bytes, and
// so on), so that what validates also starts. The buffer's rules are its
// own; they are not repeated here.
func (c *BufferConfig) Validate(n agent.Node) {
	if n.HasErrors() {
		return // a value that did not decode was left at its default
	}
	if c.MaxBytes < 1<<20 && n.Field("max_bytes").Present() {
		n.Field("max_bytes").Errorf("must be at least 1MiB, got %q", n.Field("max_bytes").Text())
	}
	if c.SegmentBytes < 64<<10 && n.Field("segment_bytes").Present() {
		n.Field("segment_bytes").Errorf("must be at least 64KiB, got %q", n.Field("segment_bytes").Text())
	}
	if c.Sync == "interval" && c.SyncInterval <= 0 && n.Field("sync_interval").Present() {
		n.Field("sync_interval").Errorf("must be positive with sync: interval, got %q", n.Field("sync_interval").Text())
	}
	if c.AckInterval <= 0 && n.Field("ack_interval").Present() {
		n.Field("ack_interval").Errorf("must be positive, got %q", n.Field("ack_interval").Text())
	}
	if n.HasErrors() {
		return
	}
	var oe *buffer.OptionError
	if err := BufferOptions(*c, nil).Validate(); errors.As(err, &oe) {
		f := n.Field(oe.Field)
		got := fmt.Sprintf("%v (from the defaults)", oe.Value)
		if b, ok := oe.Value.(int64); ok {
			got = agent.ByteSize(b).String() + " (from the defaults)"
		}
		if f.Present() {
			got = strconv.Quote(f.Text())
		}
		msg := fmt.Sprintf("%s, got %s", oe.Rule, got)
		if oe.Field == "max_bytes" {
			// The rule compares sizes that may come from the defaults.
			msg += " with segment_bytes " + fieldSize(n, "segment_bytes", c.SegmentBytes)
			if c.Kind == string(buffer.Memory) {
				msg += " and memory_bytes " + fieldSize(n, "memory_bytes", c.MemoryBytes)
			}
		}
		f.Errorf("%s", msg)
	}
}

// fieldSize is a size as the file writes it, or where it comes from the
// defaults, in the largest binary unit that divides it.
func fieldSize(n agent.Node, key string, v agent.ByteSize) string {
	if f := n.Field(key); f.Present() {
		return strconv.Quote(f.Text())
	}
	return v.String() + " (from the defaults)"
}

// Limits on CheckpointConfig.Interval.
const (
	// MinCheckpointInterval: every checkpoint costs two fsyncs of the state
	// file plus one of the outbox; more often than this wears the flash of a
	// small board and takes disk time from the pipeline log for little gain.
	MinCheckpointInterval = 100 * time.Millisecond
	// MaxCheckpointInterval: the pipeline log keeps every record since the
	// last checkpoint, and a crash replays them all; beyond an hour the
	// replay and the log's share of the disk grow large.
	MaxCheckpointInterval = time.Hour
)

// CheckpointConfig sets when the stateful operators of a pipeline take a
// checkpoint. A zero Interval leaves the choice to the agent
// (PipelineDeps.CheckpointInterval, or checkpoint.DefaultInterval).
type CheckpointConfig struct {
	Interval time.Duration `yaml:"interval" doc:"time between checkpoints of the stateful operators (100ms to 1h, default 10s); it bounds the replay after a crash"`
}

// Validate checks the interval's bounds when it is written.
func (c *CheckpointConfig) Validate(n agent.Node) {
	if f := n.Field("interval"); f.Present() && (c.Interval < MinCheckpointInterval || c.Interval > MaxCheckpointInterval) {
		f.Errorf("must be between %s and %s, got %q", MinCheckpointInterval, MaxCheckpointInterval, f.Text())
	}
}

// State stores a pipeline may choose with `state: {store: ...}`.
const (
	// StoreBbolt keeps the state in state.db (bbolt) in the pipeline's
	// data directory, checkpointed atomically with the pipeline-log
	// position: it survives restarts and crashes. The default.
	StoreBbolt = "bbolt"
	// StoreMemory keeps the state in RAM only, under the same byte budget;
	// checkpoints write nothing but the pipeline-log position. After an
	// agent restart the state starts empty.
	StoreMemory = "memory"
	// StoreKafka keeps the state per input partition in a compacted
	// changelog topic on the Kafka source's cluster, with state.db as a
	// cache: a partition moves to another agent with its state
	// (stateful_changelog.go).
	StoreKafka = "kafka"
)

// StateConfig chooses where a pipeline's stateful operators keep their
// state. An external store (a changelog topic) would be a third value.
type StateConfig struct {
	Store     string `yaml:"store" enum:"bbolt,memory,kafka" doc:"bbolt: state.db in the pipeline's data directory, kept across restarts (default); memory: RAM only under the same byte budget, nothing written to flash, empty after every agent restart; kafka: per input partition in a compacted changelog topic of the Kafka source's cluster, state.db as its cache"`
	Changelog string `yaml:"changelog" doc:"store kafka: the changelog topic (created compacted, partitioned like the input, if it does not exist)"`
}

// SinkOptions are the store-and-forward settings every sink entry may carry
// next to its type key.
type SinkOptions struct {
	Retry RetryConfig `yaml:"retry"`
	Drain DrainConfig `yaml:"drain"`
	Batch BatchConfig `yaml:"batch"`
}

// RetryConfig is the exponential backoff with full jitter between attempts.
type RetryConfig struct {
	Initial time.Duration `yaml:"initial" doc:"first backoff"`
	Max     time.Duration `yaml:"max" doc:"backoff cap"`
}

// DrainConfig limits how fast a backlog is sent and in which order.
type DrainConfig struct {
	Order          string         `yaml:"order" enum:"oldest_first,live_first" doc:"oldest_first keeps per-key order; live_first sends new data ahead of the backlog"`
	RecordsPerSec  float64        `yaml:"records_per_second" doc:"drain rate limit in records/s; 0 is unlimited"`
	BytesPerSecond agent.ByteSize `yaml:"bytes_per_second" doc:"drain rate limit in bytes/s; 0 is unlimited"`
}

// BatchConfig bounds the batches handed to a sink's Write.
type BatchConfig struct {
	MaxRecords int            `yaml:"max_records" doc:"records per write"`
	MaxBytes   agent.ByteSize `yaml:"max_bytes" doc:"payload bytes per write (a record larger than it goes alone): the memory budget of the sink's batches"`
}

// DefaultSinkOptions are the sink settings where an entry is silent.
func DefaultSinkOptions() SinkOptions {
	return SinkOptions{
		Retry: RetryConfig{Initial: 500 * time.Millisecond, Max: 30 * time.Second},
		Drain: DrainConfig{Order: "oldest_first"},
		Batch: BatchConfig{MaxRecords: 500, MaxBytes: 1 << 20},
	}
}

// Validate checks the sink options.
func (o *SinkOptions) Validate(n agent.Node) {
	if o.Retry.Initial <= 0 {
		n.Field("retry").Field("initial").Errorf("must be positive")
	}
	if o.Retry.Max < o.Retry.Initial {
		n.Field("retry").Field("max").Errorf("must be at least retry.initial (%s), got %q", o.Retry.Initial, n.Field("retry").Field("max").Text())
	}
	if o.Batch.MaxRecords <= 0 {
		n.Field("batch").Field("max_records").Errorf("must be positive, got %q", n.Field("batch").Field("max_records").Text())
	}
	// max_bytes is the memory budget between the log and the sink: the sink
	// holds a batch (and its encoding) at a time. 64 MiB is more than a
	// gateway should spend on one write; below 1 KiB a batch is one record.
	if o.Batch.MaxBytes < 1<<10 || o.Batch.MaxBytes > 64<<20 {
		n.Field("batch").Field("max_bytes").Errorf("must be between 1KiB and 64MiB, got %q", n.Field("batch").Field("max_bytes").Text())
	}
	if o.Drain.RecordsPerSec < 0 {
		n.Field("drain").Field("records_per_second").Errorf("must not be negative")
	}
}

// ComponentSpec is one entry of a pipeline's sources, operators or sinks: the
// type named by its key, its optional name, and its decoded config.
type ComponentSpec struct {
	// Type is the registered component type, the entry's key (`kafka`).
	Type string
	// Name is the entry's `name`; without one, its type ("console"), with a
	// number for the second of a type ("console-2").
	Name string
	// Config is the decoded config, as returned by the factory's Config.
	Config any
	// Sink holds the store-and-forward options of a sink entry.
	Sink SinkOptions
	// Node is where the component's config came from.
	Node agent.Node
	// Place is the entry's path in the file, like "sinks[0].kafka".
	Place string
}

// PipelineSpec is a parsed and validated pipeline file.
type PipelineSpec struct {
	// Name is the pipeline's name: the file name without its extension.
	Name string
	// File is the path the pipeline was read from.
	File string
	// Hash is the SHA-256 of the file's bytes, in hex.
	Hash string
	// Description is the file's free text description.
	Description string
	// Sources, Operators and Sinks are the pipeline's components in file order.
	Sources, Operators, Sinks []ComponentSpec
	// DeadLetter, if set, is a sink that receives rejected records.
	DeadLetter *ComponentSpec
	// Buffer configures the pipeline log.
	Buffer BufferConfig
	// Checkpoint configures the stateful operators' checkpoints: the
	// file's `checkpoint:` over the agent's defaults.
	Checkpoint CheckpointConfig
	// State chooses the stateful operators' state store (StoreBbolt
	// unless the file says otherwise).
	State StateConfig
}

// Secrets returns the values of every component's config fields tagged
// `secret:"true"` (agent.SecretValues): what the pipeline masks in every
// text it shows.
func (s *PipelineSpec) Secrets() []string {
	var out []string
	for _, list := range [][]ComponentSpec{s.Sources, s.Operators, s.Sinks} {
		for _, c := range list {
			out = append(out, agent.SecretValues(c.Config)...)
		}
	}
	if s.DeadLetter != nil {
		out = append(out, agent.SecretValues(s.DeadLetter.Config)...)
	}
	return out
}

// pipelineFile is the shape of a pipeline file.
type pipelineFile struct {
	Description string           `yaml:"description" doc:"free text shown by topology and status"`
	Sources     []agent.Node     `yaml:"sources" doc:"where events come from"`
	Operators   []agent.Node     `yaml:"operators" doc:"the chain of operators, in order"`
	Sinks       []agent.Node     `yaml:"sinks" doc:"where events go"`
	DeadLetter  agent.Node       `yaml:"dead_letter" doc:"a sink for records that cannot be processed or delivered"`
	Buffer      BufferConfig     `yaml:"buffer" doc:"the pipeline log"`
	Checkpoint  CheckpointConfig `yaml:"checkpoint" doc:"checkpoints of the stateful operators (windows, dedup, ...)"`
	State       StateConfig      `yaml:"state" doc:"where the stateful operators keep their state"`
}

// PipelineName returns the pipeline name for a file: its base name without extension.
func PipelineName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// ParsePipeline parses and validates one pipeline file's bytes. defaults are
// the agent's defaults. The error, if any, is a ConfigErrors listing every
// problem found.
func (r *Registry) ParsePipeline(file string, data []byte, defaults Defaults) (*PipelineSpec, error) {
	return r.parsePipeline(file, data, defaults, os.LookupEnv)
}

func (r *Registry) parsePipeline(file string, data []byte, defaults Defaults, env func(string) (string, bool)) (*PipelineSpec, error) {
	sum := sha256.Sum256(data)
	spec := &PipelineSpec{Name: PipelineName(file), File: file, Hash: hex.EncodeToString(sum[:]), Buffer: defaults.Buffer, Checkpoint: defaults.Checkpoint}
	root := agent.ParseConfig(file, data, env, r.ReadFile)
	if !root.Present() {
		return nil, root.Errors()
	}
	pf := pipelineFile{Buffer: defaults.Buffer, Checkpoint: defaults.Checkpoint, State: StateConfig{Store: StoreBbolt}}
	root.Decode(&pf)
	spec.Description = pf.Description
	spec.Buffer = pf.Buffer
	spec.Checkpoint = pf.Checkpoint
	spec.State = pf.State
	switch {
	case pf.State.Store == StoreKafka && pf.State.Changelog == "":
		root.Field("state").Field("store").Errorf("kafka needs changelog: the topic that keeps the state")
	case pf.State.Store != StoreKafka && pf.State.Changelog != "":
		root.Field("state").Field("changelog").Errorf("only with store: kafka")
	}
	var errs agent.ConfigErrors
	if !validName(spec.Name) {
		errs = append(errs, &agent.ConfigError{File: file, Msg: fmt.Sprintf("pipeline name %q (from the file name) must use only letters, digits, '-', '_' and '.'", spec.Name)})
	}
	if len(pf.Sources) == 0 {
		root.Field("sources").Errorf("must list at least one source")
	}
	if len(pf.Sinks) == 0 {
		root.Field("sinks").Errorf("must list at least one sink")
	}
	spec.Sources = decodeList(pf.Sources, "source", r.Sources, false)
	spec.Operators = decodeList(pf.Operators, "operator", r.Operators, false)
	spec.Sinks = decodeList(pf.Sinks, "sink", r.Sinks, true)
	if pf.DeadLetter.Present() {
		if d := decodeComponent(pf.DeadLetter, "sink", r.Sinks, true, 0); d != nil {
			if d.Name == "" {
				d.Name = "dead_letter"
			}
			spec.DeadLetter = d
		}
	}
	checkUniqueNames(spec)
	checkExactlyOnce(spec, r)
	if stateful := firstStateful(spec, r); stateful >= 0 {
		// Stateful operators need every stateless one before them; mixing is a
		// later feature, so say so plainly.
		for i := stateful; i < len(spec.Operators); i++ {
			if f := r.Operators[spec.Operators[i].Type]; !f.Stateful {
				spec.Operators[i].Node.Errorf("stateless operator %q after a stateful one is not supported yet: move it before %s", spec.Operators[i].Type, spec.Operators[stateful].Place)
			}
		}
	}
	if errs = append(errs, root.Errors()...); len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	return spec, nil
}

// StatefulIndex returns the index of the first stateful operator, or len(Operators).
func (s *PipelineSpec) StatefulIndex(r *Registry) int {
	if i := firstStateful(s, r); i >= 0 {
		return i
	}
	return len(s.Operators)
}

func firstStateful(s *PipelineSpec, r *Registry) int {
	for i, op := range s.Operators {
		if r.Operators[op.Type].Stateful {
			return i
		}
	}
	return -1
}

func checkUniqueNames(s *PipelineSpec) {
	seen := map[string]bool{}
	for _, list := range [][]ComponentSpec{s.Sources, s.Operators, s.Sinks} {
		for _, c := range list {
			if seen[c.Name] {
				c.Node.Errorf("name %q is used twice in this pipeline", c.Name)
			}
			seen[c.Name] = true
		}
	}
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// decodeList decodes the entries of a list of components (nil when the
// list is absent, or not a list: that is an error of its own).
func decodeList[T any](list []agent.Node, what string, reg map[string]agent.Factory[T], sink bool) []ComponentSpec {
	var out []ComponentSpec
	for i, n := range list {
		if c := decodeComponent(n, what, reg, sink, i); c != nil {
			out = append(out, *c)
		}
	}
	// An entry without a name is named after its type: "console", then
	// "console-2" for a second one. Names key cursors and files on disk, so
	// they must stay put when unrelated entries are added after them.
	count := map[string]int{}
	for i := range out {
		if out[i].Name != "" {
			continue
		}
		count[out[i].Type]++
		out[i].Name = out[i].Type
		if n := count[out[i].Type]; n > 1 {
			out[i].Name += "-" + strconv.Itoa(n)
		}
	}
	return out
}

var commonKeys = []string{"name"}
var sinkKeys = []string{"name", "retry", "drain", "batch"}

// decodeComponent decodes an entry like `- kafka: {...}` with an optional name
// (and, for sinks, store-and-forward options) beside the type key.
func decodeComponent[T any](n agent.Node, what string, reg map[string]agent.Factory[T], sink bool, index int) *ComponentSpec {
	if !n.IsMapping() {
		n.Errorf("must be a mapping with one %s type as its key, like `%s: {...}`", what, names(reg)[0])
		return nil
	}
	allowed := commonKeys
	if sink {
		allowed = sinkKeys
	}
	var types []string
	for _, k := range n.Keys() {
		if !slices.Contains(allowed, k) {
			types = append(types, k)
		}
	}
	if len(types) != 1 {
		if len(types) == 0 {
			n.Errorf("names no %s type; expected one of: %s", what, strings.Join(names(reg), ", "))
		} else {
			n.Errorf("names %d %s types (%s); an entry has exactly one", len(types), what, strings.Join(types, ", "))
		}
		return nil
	}
	typ := types[0]
	cn := n.Field(typ)
	f, ok := reg[typ]
	if !ok {
		n.Key(typ).Errorf("unknown %s type %q; expected one of: %s", what, typ, strings.Join(names(reg), ", "))
		return nil
	}
	spec := &ComponentSpec{Type: typ, Node: cn, Place: cn.Path(), Config: f.Config(), Sink: DefaultSinkOptions()}
	if nn := n.Field("name"); nn.Present() {
		nn.Decode(&spec.Name)
		if !validName(spec.Name) {
			nn.Errorf("must use only letters, digits, '-', '_' and '.', got %q", nn.Text())
		}
	}
	// An entry written as `- console:` with no body takes the defaults,
	// checked as a decoded config is.
	if cn.Present() && !cn.IsNull() {
		cn.Decode(spec.Config)
	} else {
		cn.CheckDefaults(spec.Config)
	}
	if sink {
		n.Without(typ, "name").Decode(&spec.Sink)
	}
	_ = index
	return spec
}

// LoadPipelineFile reads and parses one pipeline file.
func (r *Registry) LoadPipelineFile(path string, defaults Defaults) (*PipelineSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, agent.ConfigErrors{{File: path, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}}
	}
	return r.ParsePipeline(path, data, defaults)
}

// PipelineFiles lists the pipeline files of dir: *.yaml and *.yml, not hidden,
// in name order. Editors' temporary and backup files are ignored.
func PipelineFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config: pipelines directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		if IsPipelineFile(e.Name()) && !e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// IsPipelineFile reports whether a directory entry's name is one of a
// pipeline file: *.yaml or *.yml, not hidden.
func IsPipelineFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	ext := filepath.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

// ParseSink decodes one sink entry (`{mqtt: {...}, retry: {...}}`) found
// outside a pipeline file, such as the fleet heartbeat's sink in the agent
// file. The error lists every problem of n's document.
func (r *Registry) ParseSink(n agent.Node) (*ComponentSpec, error) {
	list := decodeList([]agent.Node{n}, "sink", r.Sinks, true)
	if errs := n.Errors(); errs != nil {
		return nil, errs
	}
	if len(list) != 1 {
		return nil, fmt.Errorf("config: %s: not a sink entry", n.Path())
	}
	return &list[0], nil
}
