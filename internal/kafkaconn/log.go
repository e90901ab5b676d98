// Package kafkaconn is the franz-go plumbing the Kafka source and sink
// share: a Logger that passes franz-go's warnings and errors on once per
// outage, and a Dialer whose connections report their traffic, from which
// each connector tells a cluster that went away from one that is quiet.
package kafkaconn

import (
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// maxSeen bounds the messages remembered; franz-go's are constant strings,
// a few dozen in all.
const maxSeen = 256

// Logger is a kgo.Logger that logs each distinct message once until Reset:
// a cluster that is away for an hour makes franz-go warn on every dial,
// and the connector already says once that the cluster is unreachable, and
// why. The repeats go to DEBUG.
type Logger struct {
	l    *slog.Logger
	mu   sync.Mutex
	seen map[string]bool
}

// NewLogger returns a Logger writing to l.
func NewLogger(l *slog.Logger) *Logger {
	return &Logger{l: l, seen: map[string]bool{}}
}

// Level passes on warnings and errors only.
func (k *Logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

// Log writes one franz-go log line: at its level the first time since the
// last Reset, at DEBUG after that.
func (k *Logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if !k.first(msg) {
		k.l.Debug("kafka: "+msg, keyvals...)
		return
	}
	switch level {
	case kgo.LogLevelError:
		k.l.Error("kafka: "+msg, keyvals...)
	case kgo.LogLevelWarn:
		k.l.Warn("kafka: "+msg, keyvals...)
	}
}

// first reports whether msg was not logged since the last Reset.
func (k *Logger) first(msg string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[msg] {
		return false
	}
	if len(k.seen) < maxSeen {
		k.seen[msg] = true
	}
	return true
}

// Reset starts a new episode for every message: the brokers answered.
func (k *Logger) Reset() {
	k.mu.Lock()
	clear(k.seen)
	k.mu.Unlock()
}
