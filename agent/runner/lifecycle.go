package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// StopOptions say how Run ends once the context given to it is done. The
// sources always stop first and every batch they handed over is appended and
// acked; what differs is what the sinks do with the log after that.
type StopOptions struct {
	// KeepBacklog stops the sinks as soon as the sources are stopped, without
	// delivering what the log still holds: a batch being written when they
	// stop is written again later (at-least-once, with its stable ID). It is
	// how a reload ends a generation: the next one opens the same log and
	// resumes from the same persistent cursors, so nothing is lost and the
	// reload does not wait for a backlog or an offline destination.
	KeepBacklog bool
	// DrainTimeout bounds the sinks' drain and the closing of every
	// component when KeepBacklog is false; 0 means PipelineDeps.ShutdownTimeout.
	// What is not delivered by then stays in the log on disk.
	DrainTimeout time.Duration
}

// SetStop sets how Run ends. Call it before cancelling Run's context; the
// last call before the sources have stopped wins. Without a call, Run drains
// within PipelineDeps.ShutdownTimeout.
func (p *Pipeline) SetStop(o StopOptions) { p.stopOpts.Store(&o) }

// stopOptions returns the options set by SetStop, with the timeout filled in.
func (p *Pipeline) stopOptions() StopOptions {
	var o StopOptions
	if s := p.stopOpts.Load(); s != nil {
		o = *s
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = p.deps.ShutdownTimeout
	}
	return o
}

// Fingerprint identifies a component's effective config: its type, name,
// place and parameters (after ${...} substitution; comments and layout do
// not count), and a sink's store-and-forward options. Two specs with the same
// fingerprint build the same component. It is a hash, so that it can be
// compared and kept without holding secrets.
func (c ComponentSpec) Fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%+v\x00", c.Type, c.Name, c.Place, c.Sink)
	c.Node.WriteCanonical(h)
	return hex.EncodeToString(h.Sum(nil))
}
