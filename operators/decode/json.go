package decode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/pspf/pspf-edge/agent"
)

// jsonScanner reads one JSON payload. It is a small hand-written scanner:
// numbers are parsed in place, names are interned, and only string values
// and arrays allocate.
type jsonScanner struct {
	d    *Decoder
	data []byte
	pos  int
}

func (d *Decoder) json(data []byte, r *agent.Record) error {
	s := jsonScanner{d: d, data: data}
	s.ws()
	if s.pos >= len(data) || data[s.pos] != '{' {
		return errors.New("payload is not a JSON object")
	}
	if err := s.object(r, 1); err != nil {
		return err
	}
	s.ws()
	if s.pos != len(data) {
		return fmt.Errorf("offset %d: unexpected data after the object", s.pos)
	}
	return nil
}

func (s *jsonScanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *jsonScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *jsonScanner) unexpected() error {
	if s.pos >= len(s.data) {
		return s.errorf("unexpected end of payload")
	}
	return s.errorf("unexpected character %q", s.data[s.pos])
}

// object reads an object at s.pos into fields named after s.d.name.
func (s *jsonScanner) object(r *agent.Record, depth int) error {
	if depth > s.d.cfg.MaxDepth {
		return s.errorf("nested deeper than max_depth (%d)", s.d.cfg.MaxDepth)
	}
	s.pos++ // '{'
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	d := s.d
	base := len(d.name)
	for {
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.unexpected()
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		d.name = d.name[:base]
		if base > 0 {
			d.name = append(d.name, '.')
		}
		d.name = append(d.name, key...)
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.unexpected()
		}
		s.pos++
		s.ws()
		if err := s.value(r, depth); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.unexpected()
		}
		c := s.data[s.pos]
		s.pos++
		if c == '}' {
			d.name = d.name[:base]
			return nil
		}
		if c != ',' {
			s.pos--
			return s.unexpected()
		}
	}
}

// value reads the value of the field named s.d.name.
func (s *jsonScanner) value(r *agent.Record, depth int) error {
	if s.pos >= len(s.data) {
		return s.unexpected()
	}
	d := s.d
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(r, depth+1)
	case c == '[':
		start := s.pos
		if err := s.skip(depth + 1); err != nil {
			return err
		}
		if d.cfg.Arrays == "reject" {
			return fmt.Errorf("offset %d: field %s is an array (arrays: reject)", start, d.name)
		}
		return d.add(r, agent.Bytes(d.fieldName(), append([]byte(nil), s.data[start:s.pos]...)))
	case c == '"':
		v, err := s.str()
		if err != nil {
			return err
		}
		return d.add(r, agent.String(d.fieldName(), d.str(v)))
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if strings.HasPrefix(view(s.data[s.pos:]), lit) {
				s.pos += len(lit)
				if lit == "null" {
					return nil
				}
				return d.add(r, agent.Bool(d.fieldName(), lit == "true"))
			}
		}
		return s.unexpected()
	case c == '-' || c >= '0' && c <= '9':
		f, err := s.number()
		if err != nil {
			return err
		}
		f.Name = d.fieldName()
		return d.add(r, f)
	}
	return s.unexpected()
}

// number reads a number: an int when it is written as one and fits int64, a
// float otherwise.
func (s *jsonScanner) number() (agent.Field, error) {
	start := s.pos
	data := s.data
	i := s.pos
	if data[i] == '-' {
		i++
	}
	digits := i
	if i < len(data) && data[i] == '0' {
		i++
	} else {
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
	}
	if i == digits {
		s.pos = i
		return agent.Field{}, s.errorf("bad number")
	}
	integer := true
	if i < len(data) && data[i] == '.' {
		integer = false
		i++
		n := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		if i == n {
			s.pos = i
			return agent.Field{}, s.errorf("bad number")
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		integer = false
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		n := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		if i == n {
			s.pos = i
			return agent.Field{}, s.errorf("bad number")
		}
	}
	s.pos = i
	text := data[start:i]
	if integer && i-digits <= 18 {
		var v int64
		for _, c := range data[digits:i] {
			v = v*10 + int64(c-'0')
		}
		if data[start] == '-' {
			v = -v
		}
		return agent.Field{Kind: agent.KindInt, Int: v}, nil
	}
	if integer {
		if v, err := strconv.ParseInt(view(text), 10, 64); err == nil {
			return agent.Field{Kind: agent.KindInt, Int: v}, nil
		}
	}
	v, err := strconv.ParseFloat(view(text), 64)
	if err != nil {
		s.pos = start
		return agent.Field{}, s.errorf("number %s is out of range", text)
	}
	return agent.Field{Kind: agent.KindFloat, Float: v}, nil
}

// str reads a string at s.pos. The result aliases the payload when the
// string has no escapes, and s.d.buf otherwise: it is valid until the next str.
func (s *jsonScanner) str() ([]byte, error) {
	s.pos++ // '"'
	start := s.pos
	data := s.data
	for i := start; i < len(data); i++ {
		c := data[i]
		if !strSpecial[c] {
			continue
		}
		switch {
		case c == '"':
			s.pos = i + 1
			return data[start:i], nil
		case c == '\\':
			s.pos = i
			return s.unescape(start)
		case c < 0x20:
			s.pos = i
			return nil, s.errorf("control character in string")
		}
	}
	s.pos = len(data)
	return nil, s.errorf("unterminated string")
}

// unescape continues reading a string with escapes from s.pos, the first
// backslash, into s.d.buf.
func (s *jsonScanner) unescape(start int) ([]byte, error) {
	data := s.data
	buf := append(s.d.buf[:0], data[start:s.pos]...)
	defer func() { s.d.buf = buf[:0] }()
	for s.pos < len(data) {
		c := data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return buf, nil
		case c < 0x20:
			return nil, s.errorf("control character in string")
		case c != '\\':
			buf = append(buf, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(data) {
			s.pos = len(data)
			return nil, s.errorf("unterminated string")
		}
		e := data[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, s.errorf("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if s.pos+1 < len(data) && data[s.pos] == '\\' && data[s.pos+1] == 'u' {
					save := s.pos
					s.pos += 2
					if lo, ok := s.hex4(); ok && utf16.DecodeRune(r, lo) != utf8.RuneError {
						r2 = utf16.DecodeRune(r, lo)
					} else {
						s.pos = save
					}
				}
				r = r2
			}
			buf = utf8.AppendRune(buf, r)
		default:
			s.pos -= 2
			return nil, s.errorf("bad escape \\%c", e)
		}
	}
	return nil, s.errorf("unterminated string")
}

func (s *jsonScanner) hex4() (rune, bool) {
	if s.pos+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[s.pos : s.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.pos += 4
	return r, true
}

// skip reads over any value at s.pos, checking it, without making fields.
func (s *jsonScanner) skip(depth int) error {
	if depth > s.d.cfg.MaxDepth {
		return s.errorf("nested deeper than max_depth (%d)", s.d.cfg.MaxDepth)
	}
	if s.pos >= len(s.data) {
		return s.unexpected()
	}
	switch c := s.data[s.pos]; {
	case c == '{' || c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		s.pos++
		s.ws()
		if s.pos < len(s.data) && s.data[s.pos] == end {
			s.pos++
			return nil
		}
		for {
			s.ws()
			if c == '{' {
				if s.pos >= len(s.data) || s.data[s.pos] != '"' {
					return s.unexpected()
				}
				if _, err := s.str(); err != nil {
					return err
				}
				s.ws()
				if s.pos >= len(s.data) || s.data[s.pos] != ':' {
					return s.unexpected()
				}
				s.pos++
				s.ws()
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.pos >= len(s.data) {
				return s.unexpected()
			}
			n := s.data[s.pos]
			s.pos++
			if n == end {
				return nil
			}
			if n != ',' {
				s.pos--
				return s.unexpected()
			}
		}
	case c == '"':
		_, err := s.str()
		return err
	case c == '-' || c >= '0' && c <= '9':
		_, err := s.number()
		return err
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if strings.HasPrefix(view(s.data[s.pos:]), lit) {
			s.pos += len(lit)
			return nil
		}
	}
	return s.unexpected()
}

// strSpecial marks the bytes that end the plain run of a JSON string: the
// quote, the backslash and the control characters.
var strSpecial = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// utf8String copies b into a string, replacing invalid UTF-8 by U+FFFD.
func utf8String(b []byte) string {
	i := 0
	for ; i+8 <= len(b); i += 8 { // ASCII eight bytes at a time
		if binary.LittleEndian.Uint64(b[i:])&0x8080808080808080 != 0 {
			break
		}
	}
	for _, c := range b[i:] {
		if c >= utf8.RuneSelf {
			if !utf8.Valid(b) {
				return strings.ToValidUTF8(string(b), "\uFFFD")
			}
			break
		}
	}
	return string(b)
}
