package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
)

// Channel brings the bundles published for targets.
type Channel interface {
	// Run calls got with each bundle seen for one of targets (the current
	// one at start, then each new one) until ctx is done, retrying the
	// connection with backoff meanwhile. got may be called from one
	// goroutine at a time. Run returns when ctx is done and all it started
	// has ended.
	Run(ctx context.Context, targets []string, got func(target string, raw []byte)) error
}

// Publisher publishes a bundle for a target: fleet push.
type Publisher interface {
	Push(ctx context.Context, target string, raw []byte) error
	Close()
}

// channelPublisher is a channel that also publishes: each channel is both.
type channelPublisher interface {
	Channel
	Publisher
}

// Deps is what a channel is built from.
type Deps struct {
	// Name is the agent's name (client ids).
	Name    string
	Logger  *slog.Logger
	Metrics *runner.Metrics
	// Secrets masks the channel's credentials in log lines and errors.
	Secrets *agent.Secrets
}

// NewChannel returns the channel c names; one left out of this binary by
// a build tag is an error that names the tag.
func NewChannel(c Config, d Deps) (Channel, error) {
	d = d.withDefaults()
	switch c.Channel {
	case ChannelHTTPS:
		return newHTTPS(c.HTTPS, d)
	case ChannelMQTT:
		return newMQTT(c.MQTT, d)
	case ChannelKafka:
		return newKafka(c.Kafka, d)
	}
	return nil, fmt.Errorf("fleet: unknown channel %q", c.Channel)
}

// NewPublisher returns a publisher over the channel c names.
func NewPublisher(c Config, d Deps) (Publisher, error) {
	d = d.withDefaults()
	switch c.Channel {
	case ChannelHTTPS:
		return newHTTPS(c.HTTPS, d)
	case ChannelMQTT:
		return newMQTT(c.MQTT, d)
	case ChannelKafka:
		return newKafka(c.Kafka, d)
	}
	return nil, fmt.Errorf("fleet: unknown channel %q", c.Channel)
}

// leftOutMsg says that channel was left out of this binary, by which build
// tag, and which channels it has.
func leftOutMsg(channel string) string {
	return fmt.Sprintf("channel %s is not in this binary: it was built with -tags %s (channels here: %s)",
		channel, leftOut(channel), strings.Join(Channels(), ", "))
}

func leftOutError(channel string) error { return fmt.Errorf("fleet: %s", leftOutMsg(channel)) }

func (d Deps) withDefaults() Deps {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = runner.NewMetrics()
	}
	if d.Name == "" {
		d.Name = "pspf-edge"
	}
	return d
}

func topicFor(pattern, target string) string { return strings.ReplaceAll(pattern, "{target}", target) }

// outage reports a channel's failures: a WARN when one begins (not one per
// retry), an INFO when it ends, a metric for every failure.
type outage struct {
	log      *slog.Logger
	secrets  *agent.Secrets
	failures *agent.Counter
	mu       sync.Mutex
	since    time.Time
}

func newOutage(d Deps, channel string) *outage {
	return &outage{log: d.Logger, secrets: d.Secrets, failures: d.Metrics.Counter("pspf_fleet_channel_errors_total", "channel", channel)}
}

func (o *outage) fail(err error) {
	o.failures.Inc()
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() {
		return
	}
	o.since = time.Now()
	o.log.Warn("fleet: config channel unreachable; retrying, the pipelines stay as they are", "err", o.secrets.Text(err.Error()))
}

func (o *outage) ok() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return
	}
	o.log.Info("fleet: config channel reachable again", "after", time.Since(o.since).Round(time.Second))
	o.since = time.Time{}
}
