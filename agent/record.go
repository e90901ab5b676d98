package agent

//go:generate go run github.com/tinylib/msgp@v1.6.5 -file record.go -o record_gen.go -tests=false

import (
	"math"
	"strconv"
	"time"
)

// MaxFields is the most fields a record may have: decoding checks the count
// before it allocates, so that a damaged payload cannot ask for gigabytes. The
// msgp:limit directive below must say the same. A raw payload is limited
// separately, to 16 MiB (the `limit` in its msgp tag), above the largest
// payload any decoder or log accepts.
const MaxFields = 4096

//msgp:limit arrays:4096 maps:4096

// Kind is the type of a Field's value.
type Kind uint8

// The kinds of field values. The zero Kind is invalid: a Field always says what it holds.
const (
	KindFloat Kind = iota + 1
	KindInt
	KindString
	KindBool
	KindBytes
)

// String returns the kind's name as used in configs and schemas.
func (k Kind) String() string {
	switch k {
	case KindFloat:
		return "float"
	case KindInt:
		return "int"
	case KindString:
		return "string"
	case KindBool:
		return "bool"
	case KindBytes:
		return "bytes"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Field is one named, typed value of a Record. Exactly one of the value members
// is meaningful, chosen by Kind: Float for KindFloat, Int for KindInt and
// KindBool (0 or 1), Str for KindString, Bytes for KindBytes. Fields are plain
// values so that a record's fields live in one slice without per-field
// allocations. Its msgp encoding is written by hand in field_msgp.go so that
// only the meaningful member is stored.
//
//msgp:ignore Field
type Field struct {
	Name  string
	Kind  Kind
	Float float64
	Int   int64
	Str   string
	Bytes []byte
}

// Float returns a float field.
func Float(name string, v float64) Field { return Field{Name: name, Kind: KindFloat, Float: v} }

// Int returns an int field.
func Int(name string, v int64) Field { return Field{Name: name, Kind: KindInt, Int: v} }

// String returns a string field.
func String(name, v string) Field { return Field{Name: name, Kind: KindString, Str: v} }

// Bool returns a bool field.
func Bool(name string, v bool) Field {
	f := Field{Name: name, Kind: KindBool}
	if v {
		f.Int = 1
	}
	return f
}

// Bytes returns a bytes field. The field keeps b; the caller must not modify it afterwards.
func Bytes(name string, b []byte) Field { return Field{Name: name, Kind: KindBytes, Bytes: b} }

// AsFloat returns the field as a number: floats and ints as they are, bools as 0 or 1.
// Strings and bytes are not numbers: ok is false.
func (f *Field) AsFloat() (v float64, ok bool) {
	switch f.Kind {
	case KindFloat:
		return f.Float, true
	case KindInt, KindBool:
		return float64(f.Int), true
	}
	return 0, false
}

// AsBool reports the field's truth: a bool as it is, a number when it is not zero.
func (f *Field) AsBool() (v bool, ok bool) {
	switch f.Kind {
	case KindBool, KindInt:
		return f.Int != 0, true
	case KindFloat:
		return f.Float != 0, true
	}
	return false, false
}

// AppendText appends the field's value as text: numbers in their shortest form,
// strings as they are, bytes as they are.
func (f *Field) AppendText(dst []byte) []byte {
	switch f.Kind {
	case KindFloat:
		if f.Float == math.Trunc(f.Float) && math.Abs(f.Float) < 1e15 {
			return strconv.AppendFloat(dst, f.Float, 'f', -1, 64)
		}
		return strconv.AppendFloat(dst, f.Float, 'g', -1, 64)
	case KindInt:
		return strconv.AppendInt(dst, f.Int, 10)
	case KindBool:
		return strconv.AppendBool(dst, f.Int != 0)
	case KindString:
		return append(dst, f.Str...)
	case KindBytes:
		return append(dst, f.Bytes...)
	}
	return dst
}

// Record is one event on its way through a pipeline.
//
// ID is stable across restarts: (pipeline, log sequence) for records read from
// a pipeline log, (pipeline, operator, key, window start) for window outputs.
// Sinks forward it as a header or property so that a consumer can recognise a
// duplicate after a crash. Times are Unix nanoseconds. Raw holds the payload as
// received until a decoder turns it into Fields.
//
//msgp:tuple Record
type Record struct {
	ID        string  `msg:"id"`
	Key       string  `msg:"key"`
	Source    string  `msg:"src"`
	EventTime int64   `msg:"et"`
	RecvTime  int64   `msg:"rt"`
	Fields    []Field `msg:"f"`
	Raw       []byte  `msg:"raw,limit=16777216"`
	// Seq is the record's sequence in the log a sink reads it from, set by
	// the runner before Write (0 elsewhere). It is not stored: it exists so
	// that a sink that keeps its own cursor (CursorOwner) can commit it.
	Seq uint64 `msg:"-"`
}

// Field returns the named field, or nil. The pointer is valid until the
// record's fields are next appended to.
func (r *Record) Field(name string) *Field {
	for i := range r.Fields {
		if r.Fields[i].Name == name {
			return &r.Fields[i]
		}
	}
	return nil
}

// Set replaces the field of the same name, or appends f.
func (r *Record) Set(f Field) {
	for i := range r.Fields {
		if r.Fields[i].Name == f.Name {
			r.Fields[i] = f
			return
		}
	}
	r.Fields = append(r.Fields, f)
}

// Delete removes the named field, keeping the order of the others.
func (r *Record) Delete(name string) {
	for i := range r.Fields {
		if r.Fields[i].Name == name {
			r.Fields = append(r.Fields[:i], r.Fields[i+1:]...)
			return
		}
	}
}

// Time returns the event time, or the receive time if the event has none.
func (r *Record) Time() time.Time {
	if r.EventTime != 0 {
		return time.Unix(0, r.EventTime)
	}
	return time.Unix(0, r.RecvTime)
}

// Reset empties the record but keeps the capacity of its slices for reuse.
func (r *Record) Reset() {
	*r = Record{Fields: r.Fields[:0], Raw: r.Raw[:0]}
}
