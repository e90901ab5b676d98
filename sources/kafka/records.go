package kafka

import (
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pspf/pspf-edge/agent"
)

// The fields a record gets (Config.Metadata and Config.Headers). The names
// are identifiers in expressions (kafka.partition == 0).
const (
	FieldTopic     = "kafka.topic"     // string
	FieldPartition = "kafka.partition" // int
	FieldOffset    = "kafka.offset"    // int
	FieldTimestamp = "kafka.timestamp" // int, Unix milliseconds
	FieldKey       = "kafka.key"       // string, or bytes when not UTF-8; absent without a key
	HeaderPrefix   = "kafka.header."   // + the header's name: string, or bytes when not UTF-8
)

// maxHeaderFields bounds the header fields of one record: a record may
// hold at most agent.MaxFields fields, and operators add their own.
const maxHeaderFields = 64

// recordOverhead is what a record costs beyond its key, value and headers
// (the Record, its fields, the bookkeeping), counted against
// max_in_flight_bytes so that a flood of empty records is bounded too.
const recordOverhead = 128

// payloadSize is a record's key, value and headers: what max_payload
// bounds.
func payloadSize(kr *kgo.Record) int64 {
	n := len(kr.Key) + len(kr.Value)
	for i := range kr.Headers {
		n += len(kr.Headers[i].Key) + len(kr.Headers[i].Value)
	}
	return int64(n)
}

// batchBufs are the slices of one batch: its records, their fields and the
// copies of their values. They go back to the source's free list when the
// batch is acked (the runner owns the records until then) and serve a
// later batch.
type batchBufs struct {
	recs   []agent.Record
	fields []agent.Field
	arena  []byte
}

// fieldsFor is how many fields a record gets.
func (b *builder) fieldsFor(kr *kgo.Record) int {
	n := 0
	if b.metadata {
		n = 5
	}
	if b.headers {
		n += min(len(kr.Headers), maxHeaderFields)
	}
	return n
}

// builder turns franz-go records into agent records.
type builder struct {
	source   string // the component, Record.Source
	metadata bool
	headers  bool
	names    map[string]string // header name -> field name, so as not to allocate per record
	dropped  *agent.Counter    // header fields beyond maxHeaderFields
}

// maxNames bounds the cached header field names: a producer that invents
// a header name per record costs an allocation each, not memory.
const maxNames = 1024

func newBuilder(source string, metadata, headers bool, dropped *agent.Counter) *builder {
	return &builder{source: source, metadata: metadata, headers: headers, names: map[string]string{}, dropped: dropped}
}

// build fills r from kr: the key, the value (copied to arena) as Raw, the
// timestamp as event time, and the fields, appended to fields (whose
// capacity the caller made room in). It returns what is left of fields and
// the arena.
func (b *builder) build(r *agent.Record, kr *kgo.Record, recv int64, fields []agent.Field, arena []byte) ([]agent.Field, []byte) {
	start := len(arena)
	arena = append(arena, kr.Value...)
	*r = agent.Record{Source: b.source, RecvTime: recv, Raw: arena[start:len(arena):len(arena)]}
	if !kr.Timestamp.IsZero() {
		r.EventTime = kr.Timestamp.UnixNano()
	}
	var key string
	if len(kr.Key) > 0 {
		key = string(kr.Key)
		r.Key = key
	}
	f := fields[:0]
	if b.metadata {
		f = append(f,
			agent.String(FieldTopic, kr.Topic),
			agent.Int(FieldPartition, int64(kr.Partition)),
			agent.Int(FieldOffset, kr.Offset),
			agent.Int(FieldTimestamp, kr.Timestamp.UnixMilli()))
		if len(kr.Key) > 0 {
			if utf8.ValidString(key) {
				f = append(f, agent.String(FieldKey, key))
			} else {
				start := len(arena)
				arena = append(arena, kr.Key...)
				f = append(f, agent.Bytes(FieldKey, arena[start:len(arena):len(arena)]))
			}
		}
	}
	if b.headers {
		taken := 0
		for i := range kr.Headers {
			h := &kr.Headers[i]
			name := b.name(h.Key)
			var v agent.Field
			if utf8.Valid(h.Value) {
				v = agent.String(name, string(h.Value))
			} else {
				start := len(arena)
				arena = append(arena, h.Value...)
				v = agent.Bytes(name, arena[start:len(arena):len(arena)])
			}
			// A name given twice: the last value wins, as in a map.
			if j := indexOf(f, name); j >= 0 {
				f[j] = v
				continue
			}
			if taken == maxHeaderFields {
				if b.dropped != nil {
					b.dropped.Inc()
				}
				continue
			}
			f = append(f, v)
			taken++
		}
	}
	if len(f) > 0 {
		r.Fields = f[:len(f):len(f)]
	}
	return fields[len(f):], arena
}

// name returns the field name of a header.
func (b *builder) name(h string) string {
	if n, ok := b.names[h]; ok {
		return n
	}
	n := HeaderPrefix + h
	if len(b.names) < maxNames {
		b.names[h] = n
	}
	return n
}

// indexOf returns the index of the field named name, or -1.
func indexOf(f []agent.Field, name string) int {
	for i := range f {
		if f[i].Name == name {
			return i
		}
	}
	return -1
}
