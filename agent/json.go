package agent

import (
	"encoding/base64"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r as one JSON object: its fields at the top level, and its
// metadata under reserved names: "_id", "_key" (if set), "_time" (event time,
// RFC 3339 with nanoseconds, if set), and "_raw" (the raw payload, as a string
// when it is valid UTF-8, else base64 under "_raw_b64") when the record has no
// fields. NaN and infinities, which JSON cannot hold, are written as null.
func AppendJSON(dst []byte, r *Record) []byte {
	dst = append(dst, '{')
	first := true
	key := func(k string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
	}
	if r.ID != "" {
		key("_id")
		dst = appendJSONString(dst, r.ID)
	}
	if r.Key != "" {
		key("_key")
		dst = appendJSONString(dst, r.Key)
	}
	if r.EventTime != 0 {
		key("_time")
		dst = append(dst, '"')
		dst = time.Unix(0, r.EventTime).UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	for i := range r.Fields {
		f := &r.Fields[i]
		key(f.Name)
		dst = appendJSONValue(dst, f)
	}
	if len(r.Fields) == 0 && len(r.Raw) > 0 {
		if utf8.Valid(r.Raw) {
			key("_raw")
			dst = appendJSONString(dst, string(r.Raw))
		} else {
			key("_raw_b64")
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, r.Raw)
			dst = append(dst, '"')
		}
	}
	return append(dst, '}')
}

func appendJSONValue(dst []byte, f *Field) []byte {
	switch f.Kind {
	case KindFloat:
		if math.IsNaN(f.Float) || math.IsInf(f.Float, 0) {
			return append(dst, "null"...)
		}
		return f.AppendText(dst)
	case KindInt:
		return strconv.AppendInt(dst, f.Int, 10)
	case KindBool:
		return strconv.AppendBool(dst, f.Int != 0)
	case KindString:
		return appendJSONString(dst, f.Str)
	case KindBytes:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, f.Bytes)
		return append(dst, '"')
	}
	return append(dst, "null"...)
}

const hexDigits = "0123456789abcdef"

// plain8 reports whether none of the 8 bytes of s is a control character,
// '"', '\\' or outside ASCII, testing all eight at once (the "has a byte
// less than n" and "has a zero byte" word tricks: exact about whether any
// byte matches, which is all this needs).
func plain8(s string) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	x := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	ctl := (x - lsb*0x20) &^ x
	q := x ^ (lsb * '"')
	quote := (q - lsb) &^ q
	b := x ^ (lsb * '\\')
	bslash := (b - lsb) &^ b
	return (ctl|quote|bslash|x)&msb == 0
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time while none needs a second look: most
		// strings are plain ASCII (sensor names, padding, IDs).
		for i+8 <= len(s) && plain8(s[i:i+8]) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
