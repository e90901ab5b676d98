// Package console is a sink that prints records to the terminal: readable
// lines for people, or NDJSON for other programs.
package console

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the console sink's config.
type Config struct {
	Format string `yaml:"format" enum:"text,ndjson" doc:"text: one readable line per record; ndjson: one JSON object per line"`
	Stream string `yaml:"stream" enum:"stdout,stderr" doc:"where to print"`
}

// Defaults returns the defaults: readable text on stdout.
func Defaults() *Config { return &Config{Format: "text", Stream: "stdout"} }

// Factory returns the registry entry of the console sink.
func Factory() agent.Factory[agent.Sink] {
	return agent.Typed[agent.Sink]("prints records as readable lines or NDJSON", Defaults, func(c *Config, env agent.Env) (agent.Sink, error) {
		w := io.Writer(os.Stdout)
		if c.Stream == "stderr" {
			w = os.Stderr
		}
		return New(*c, w), nil
	})
}

// Sink prints records to a writer. Writes from several pipelines to the same
// stream do not interleave within a batch.
type Sink struct {
	cfg Config
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// New returns a console sink writing to w.
func New(cfg Config, w io.Writer) *Sink { return &Sink{cfg: cfg, w: w} }

// Connect does nothing: the terminal is always there.
func (s *Sink) Connect(context.Context) error { return nil }

// Write prints the batch with a single write call.
func (s *Sink) Write(_ context.Context, recs []agent.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf[:0]
	for i := range recs {
		if s.cfg.Format == "ndjson" {
			b = agent.AppendJSON(b, &recs[i])
		} else {
			b = AppendText(b, &recs[i])
		}
		b = append(b, '\n')
	}
	s.buf = b
	_, err := s.w.Write(b)
	return err
}

// AppendText appends the record's readable form: its time, key and fields as
// name=value, for example `12:00:01.250 sensor-1 sensor=sensor-1 temp=21.5`.
func AppendText(b []byte, r *agent.Record) []byte {
	t := r.EventTime
	if t == 0 {
		t = r.RecvTime
	}
	b = time.Unix(0, t).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	if r.Key != "" {
		b = append(b, ' ', '[')
		b = append(b, r.Key...)
		b = append(b, ']')
	}
	for i := range r.Fields {
		f := &r.Fields[i]
		b = append(b, ' ')
		b = append(b, f.Name...)
		b = append(b, '=')
		if f.Kind == agent.KindBytes {
			b = append(b, "<"...)
			b = append(b, itoa(len(f.Bytes))...)
			b = append(b, " bytes>"...)
			continue
		}
		b = f.AppendText(b)
	}
	if len(r.Fields) == 0 {
		b = append(b, ' ')
		b = append(b, r.Raw...)
	}
	return b
}

func itoa(n int) string {
	f := agent.Int("", int64(n))
	return string(f.AppendText(nil))
}

// Close does nothing; the stream belongs to the process.
func (s *Sink) Close(context.Context) error { return nil }
