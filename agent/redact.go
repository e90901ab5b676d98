package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Mask is what a secret is replaced with wherever the agent shows text: log
// lines, the status API, `pspf-edge status`, dead-letter reasons. A URL's
// password becomes user:xxxxx, as in url.URL.Redacted.
const Mask = "xxxxx"

// Secrets is the set of secret values of an agent: the passwords, tokens,
// SASL credentials and secret header values its pipelines are configured
// with (every config field tagged `secret:"true"`, see SecretValues), and
// any a component adds itself (Env.Secrets). Text masks each of them, and
// the password of every URL, in a text; Redact does the same to an error;
// RedactHandler to every log line. The runner redacts at the places where
// an error becomes text (a log line, a last_error, a dead-letter reason),
// so a component returns its errors as they are.
//
// A value stays in the set once added, so that an error that still carries
// a secret replaced by a reload is masked too. Masking is by text: a secret
// of a few characters masks the same characters wherever they appear. The
// zero Secrets is empty and ready; a nil *Secrets masks URL passwords only,
// and Add on it does nothing. Secrets is safe for concurrent use.
type Secrets struct {
	mu   sync.Mutex
	vals map[string]bool
	repl atomic.Pointer[strings.Replacer] // masks every form of every value; nil when empty
}

// Add adds values to the set; empty strings are ignored. Each value is also
// masked in the forms it takes inside a URL (query- and path-escaped, as a
// userinfo password) and inside a quoted Go string (%q).
func (s *Secrets) Add(vals ...string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	added := false
	for _, v := range vals {
		for _, f := range secretForms(v) {
			if s.vals == nil {
				s.vals = map[string]bool{}
			}
			if !s.vals[f] {
				s.vals[f] = true
				added = true
			}
		}
	}
	if !added {
		return
	}
	// Longest first: the replacer tries its old strings in argument order
	// at each position, so a secret that contains another is masked whole.
	forms := make([]string, 0, len(s.vals))
	for f := range s.vals {
		forms = append(forms, f)
	}
	slices.SortFunc(forms, func(a, b string) int {
		if d := len(b) - len(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Mask)
	}
	s.repl.Store(strings.NewReplacer(pairs...))
}

// secretForms returns v as written in a text, in a URL and in a quoted
// string.
func secretForms(v string) []string {
	if v == "" {
		return nil
	}
	q := strconv.Quote(v)
	forms := []string{v, url.QueryEscape(v), url.PathEscape(v), q[1 : len(q)-1]}
	if u := url.UserPassword("u", v).String(); len(u) > 2 {
		forms = append(forms, u[2:])
	}
	slices.Sort(forms)
	return slices.Compact(forms)
}

// Text returns t with every value of the set, and every password in a URL
// (see RedactText), replaced by Mask.
func (s *Secrets) Text(t string) string {
	if s != nil {
		if r := s.repl.Load(); r != nil {
			t = r.Replace(t)
		}
	}
	return RedactText(t)
}

// Redact returns err with its text masked by Text; errors.Is and errors.As
// still see err and what it wraps. It returns err itself when there was
// nothing to mask, and nil for nil.
func (s *Secrets) Redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := s.Text(msg); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

// redactedError is an error whose text had a secret masked.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// RedactURL returns the URL raw with the password of its userinfo replaced
// by Mask (a userinfo without a password, often a token, is masked whole):
// what a connector writes in an error or a log line instead of the URL it
// was configured with. It is RedactText on the one URL.
func RedactURL(raw string) string {
	return RedactText(raw)
}

// RedactText returns t with the userinfo of every URL in it masked:
// scheme://user:pass@host becomes scheme://user:xxxxx@host, and
// scheme://token@host becomes scheme://xxxxx@host. A URL ends at a space,
// a quote or an angle bracket.
func RedactText(t string) string {
	if !strings.Contains(t, "://") || !strings.Contains(t, "@") {
		return t
	}
	var b strings.Builder
	for {
		i := strings.Index(t, "://")
		if i < 0 {
			b.WriteString(t)
			return b.String()
		}
		b.WriteString(t[:i+3])
		t = t[i+3:]
		// The authority ends where the path, query or fragment begins, or
		// where the URL itself ends in the text.
		end := strings.IndexAny(t, "/?#")
		if e := strings.IndexAny(t, " \t\r\n\"'`<>,;()[]{}"); e >= 0 && (end < 0 || e < end) {
			end = e
		}
		if end < 0 {
			end = len(t)
		}
		at := strings.LastIndexByte(t[:end], '@')
		if at < 0 {
			continue
		}
		if user, _, ok := strings.Cut(t[:at], ":"); ok {
			b.WriteString(user)
			b.WriteString(":")
		}
		b.WriteString(Mask)
		t = t[at:]
	}
}

// SecretValues returns the values of cfg's fields tagged `secret:"true"`,
// for the runner to add to the agent's Secrets before the component is
// built: a string, every string of a []string, every value of a
// map[string]string. cfg is a config struct or a pointer to one; nested
// structs, pointers and slices of structs are searched too.
func SecretValues(cfg any) []string {
	var out []string
	secretValues(reflect.ValueOf(cfg), false, &out)
	return out
}

func secretValues(v reflect.Value, secret bool, out *[]string) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			secretValues(v.Elem(), secret, out)
		}
	case reflect.String:
		if secret && v.String() != "" {
			*out = append(*out, v.String())
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() {
				secretValues(v.Field(i), secret || f.Tag.Get("secret") == "true", out)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			secretValues(v.Index(i), secret, out)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			secretValues(it.Value(), secret, out)
		}
	}
}

// RedactHandler returns a slog.Handler that masks, by s.Text, the message
// and every attribute value of each record before h handles it: strings,
// errors, and any other value whose printed form (fmt.Sprint) holds a
// secret, which is then logged as that masked text. Numbers, times and
// durations pass as they are. A handler that already redacts with s is
// returned unchanged.
func RedactHandler(h slog.Handler, s *Secrets) slog.Handler {
	if r, ok := h.(*redactHandler); ok && r.s == s {
		return h
	}
	return &redactHandler{h: h, s: s}
}

type redactHandler struct {
	h slog.Handler
	s *Secrets
}

func (r *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return r.h.Enabled(ctx, l)
}

func (r *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.s.Text(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = r.attr(a)
	}
	return &redactHandler{h: r.h.WithAttrs(red), s: r.s}
}

func (r *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: r.h.WithGroup(name), s: r.s}
}

// attr returns a with its value masked.
func (r *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.s.Text(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = r.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, r.s.Text(err.Error()))
		}
		text := fmt.Sprint(v.Any())
		if red := r.s.Text(text); red != text {
			return slog.String(a.Key, red)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
