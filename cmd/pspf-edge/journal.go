package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// journalHandler is the slog.Handler used when stderr goes to the systemd
// journal. The journal stamps every line itself, so the handler drops slog's
// time; and it maps the level to a syslog priority with the "<N>" line prefix
// of sd-daemon(3), so `journalctl -p warning` and the colours work:
//
//	<3> error   <4> warning   <6> info   <7> debug
//
// The rest of the line is what the text or JSON handler would write. Derived
// handlers (WithAttrs, WithGroup) share the writer and its lock.
type journalHandler struct {
	inner slog.Handler
	out   *journalWriter
}

// newJournalHandler wraps a text (or, if json, JSON) handler writing to w.
// opts may be nil; its ReplaceAttr, if any, still applies to every other
// attribute.
func newJournalHandler(w io.Writer, json bool, opts *slog.HandlerOptions) slog.Handler {
	o := slog.HandlerOptions{}
	if opts != nil {
		o = *opts
	}
	replace := o.ReplaceAttr
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		if replace != nil {
			return replace(groups, a)
		}
		return a
	}
	out := &journalWriter{w: w, prio: '6'}
	if json {
		return &journalHandler{inner: slog.NewJSONHandler(out, &o), out: out}
	}
	return &journalHandler{inner: slog.NewTextHandler(out, &o), out: out}
}

// Enabled reports whether the inner handler logs at level l.
func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle writes r as one line (or more, each prefixed) with r's priority.
func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prio = journalPriority(r.Level)
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns a handler that adds as to every record.
func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

// WithGroup returns a handler that puts later attributes in group name.
func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), out: h.out}
}

// journalPriority maps a slog level to a syslog priority digit.
func journalPriority(l slog.Level) byte {
	switch {
	case l >= slog.LevelError:
		return '3'
	case l >= slog.LevelWarn:
		return '4'
	case l >= slog.LevelInfo:
		return '6'
	default:
		return '7'
	}
}

// journalWriter prefixes each line of what the inner handler writes with the
// priority that Handle set. slog handlers write a record with one Write call,
// made while Handle holds mu, so prio always belongs to that record.
type journalWriter struct {
	mu   sync.Mutex
	w    io.Writer
	prio byte
	buf  []byte
}

func (j *journalWriter) Write(p []byte) (int, error) {
	b := j.buf[:0]
	start := true
	for _, c := range p {
		if start {
			b = append(b, '<', j.prio, '>')
			start = false
		}
		b = append(b, c)
		start = c == '\n'
	}
	j.buf = b
	if _, err := j.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
