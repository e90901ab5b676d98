// Package e2ebench is the end-to-end benchmark harness: a load generator
// publishing JSON sensor readings to MQTT, a counter reading what reaches
// Kafka, the brokers and the agent under test as child processes, and the
// report (a table, JSON and an SVG plot). It is a development tool, not part
// of the shipped binary; `make bench-e2e` runs it through cmd/e2ebench.
package e2ebench

import (
	"bytes"
	"strconv"
)

// Kind is what the load generator makes of one sequence number.
type Kind uint8

const (
	// KindValid is a reading that passes the pipeline's filter.
	KindValid Kind = iota
	// KindFiltered is a well-formed reading the filter drops (temp -99).
	KindFiltered
	// KindInvalid is a payload that is not JSON: the decoder rejects it.
	KindInvalid
)

// Mix is the share of filtered and invalid payloads, each in [0, 1].
type Mix struct {
	Filtered, Invalid float64
}

// KindOf returns the kind of payload sequence number seq gets. It is a pure
// function of seq and the mix, so the counter knows which sequence numbers
// to expect without talking to the generator.
func (m Mix) KindOf(seq uint64) Kind {
	u := float64(splitmix(seq)>>11) / (1 << 53)
	switch {
	case u < m.Invalid:
		return KindInvalid
	case u < m.Invalid+m.Filtered:
		return KindFiltered
	}
	return KindValid
}

// Expected returns how many of sequence numbers [0, n) are valid.
func (m Mix) Expected(n uint64) uint64 {
	var e uint64
	for s := range n {
		if m.KindOf(s) == KindValid {
			e++
		}
	}
	return e
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// AppendPayload appends the payload of sequence number seq sent at sentUS
// (Unix microseconds) to dst, padded with a "pad" string to at least size
// bytes:
//
//	{"seq":42,"sent_us":1700000000000000,"ts":1700000000000,"temp":21.5,"pad":"xxxx"}
//
// An invalid payload is the same text cut before its closing brace.
func AppendPayload(dst []byte, seq uint64, sentUS int64, kind Kind, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"sent_us":`...)
	dst = strconv.AppendInt(dst, sentUS, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, sentUS/1000, 10)
	dst = append(dst, `,"temp":`...)
	if kind == KindFiltered {
		dst = append(dst, "-99"...)
	} else {
		dst = strconv.AppendFloat(dst, 15+float64(seq%200)/10, 'f', 1, 64)
	}
	dst = append(dst, `,"pad":"`...)
	for n := len(dst) - start + 2; n < size; n++ {
		dst = append(dst, 'x')
	}
	return closePayload(dst, kind)
}

func closePayload(dst []byte, kind Kind) []byte {
	dst = append(dst, '"')
	if kind != KindInvalid {
		dst = append(dst, '}')
	}
	return dst
}

// AppendNoisyPayload is AppendPayload with a pad of pseudo-random letters
// (a function of seq) instead of x: lz4 cannot shrink it, as it cannot
// shrink most real payloads of that size (images, compressed blobs), so a
// benchmark's memory and bytes are what such payloads cost.
func AppendNoisyPayload(dst []byte, seq uint64, sentUS int64, kind Kind, size int) []byte {
	start := len(dst)
	dst = AppendPayload(dst, seq, sentUS, kind, 0)
	dst = dst[:len(dst)-1] // the closing quote (and brace) come again below
	if kind != KindInvalid {
		dst = dst[:len(dst)-1]
	}
	x := splitmix(seq)
	for n := len(dst) - start + 2; n < size; n++ {
		if n%12 == 0 {
			x = splitmix(x)
		}
		dst = append(dst, 'a'+byte(x%26))
		x /= 26
	}
	return closePayload(dst, kind)
}

// ParseValue finds the sequence number and send time in a record that
// reached Kafka: the values of the first "seq" and "sent_us" keys anywhere in
// it, so that any agent that forwards the payload's fields as JSON (flat or
// nested) can be measured. ok is false if either is missing.
func ParseValue(v []byte) (seq uint64, sentUS int64, ok bool) {
	s, ok1 := numberAfter(v, `"seq":`)
	t, ok2 := numberAfter(v, `"sent_us":`)
	if !ok1 || !ok2 || s < 0 {
		return 0, 0, false
	}
	return uint64(s), t, true
}

// numberAfter parses the number after key (integers, or floats such as
// 1.7e+15 that some encoders write).
func numberAfter(v []byte, key string) (int64, bool) {
	i := bytes.Index(v, []byte(key))
	if i < 0 {
		return 0, false
	}
	v = v[i+len(key):]
	for len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	j := 0
	for j < len(v) && (v[j] >= '0' && v[j] <= '9' || v[j] == '-' || v[j] == '+' || v[j] == '.' || v[j] == 'e' || v[j] == 'E') {
		j++
	}
	if n, err := strconv.ParseInt(string(v[:j]), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(v[:j]), 64)
	if err != nil {
		return 0, false
	}
	return int64(f), true
}

// NumberField returns the number after "key": in a JSON value (a window's
// count, say).
func NumberField(v []byte, key string) (int64, bool) {
	return numberAfter(v, `"`+key+`":`)
}
