package agent

import (
	"unsafe"

	"github.com/tinylib/msgp/msgp"
)

// StringArena cuts strings out of one allocation: decoding a batch of
// records (Record.UnmarshalShared) then costs one allocation for all their
// strings (names, keys, values) instead of one per string. The runner
// decodes what it reads from a log this way. The bytes behind a string
// handed out are never written again, and a new arena gets a new
// allocation, so a string stays valid as long as anything holds it; holding
// one keeps its whole batch's strings alive, which is why sinks copy what
// they keep (see Sink). The nil arena allocates each string on its own.
type StringArena struct{ buf []byte }

// NewStringArena returns an arena for up to n bytes of strings; strings
// beyond that are allocated on their own.
func NewStringArena(n int) *StringArena { return &StringArena{buf: make([]byte, 0, n)} }

// read reads a msgpack string from the front of b.
func (a *StringArena) read(b []byte) (string, []byte, error) {
	if a == nil {
		return msgp.ReadStringBytes(b)
	}
	v, rest, err := msgp.ReadStringZC(b)
	if err != nil || len(v) == 0 {
		return "", rest, err
	}
	if len(a.buf)+len(v) > cap(a.buf) {
		return string(v), rest, nil
	}
	start := len(a.buf)
	a.buf = append(a.buf, v...)
	return unsafe.String(&a.buf[start], len(v)), rest, nil
}

// UnmarshalShared decodes a record from the front of b like UnmarshalMsg
// (the msgp tuple of record_gen.go: ID, Key, Source, EventTime, RecvTime,
// Fields, Raw) and returns the rest, with its strings cut from a rather
// than allocated one by one. Fields and Raw reuse z's slices; nothing of
// the result aliases b. It accepts exactly what UnmarshalMsg accepts.
func (z *Record) UnmarshalShared(b []byte, a *StringArena) ([]byte, error) {
	n, b, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return b, err
	}
	if n != 7 {
		return b, msgp.ArrayError{Wanted: 7, Got: n}
	}
	if z.ID, b, err = a.read(b); err != nil {
		return b, err
	}
	if z.Key, b, err = a.read(b); err != nil {
		return b, err
	}
	if z.Source, b, err = a.read(b); err != nil {
		return b, err
	}
	if z.EventTime, b, err = msgp.ReadInt64Bytes(b); err != nil {
		return b, err
	}
	if z.RecvTime, b, err = msgp.ReadInt64Bytes(b); err != nil {
		return b, err
	}
	if n, b, err = msgp.ReadArrayHeaderBytes(b); err != nil {
		return b, err
	}
	if n > MaxFields {
		return b, msgp.ErrLimitExceeded
	}
	if cap(z.Fields) >= int(n) {
		z.Fields = z.Fields[:n]
	} else {
		z.Fields = make([]Field, n)
	}
	for i := range z.Fields {
		if b, err = z.Fields[i].unmarshal(b, a); err != nil {
			return b, err
		}
	}
	if n, b, err = msgp.ReadBytesHeader(b); err != nil {
		return b, err
	}
	if n > maxRaw {
		return b, msgp.ErrLimitExceeded
	}
	if uint32(len(b)) < n {
		return b, msgp.ErrShortBytes
	}
	if z.Raw == nil || uint32(cap(z.Raw)) < n {
		z.Raw = make([]byte, n)
	} else {
		z.Raw = z.Raw[:n]
	}
	copy(z.Raw, b)
	return b[n:], nil
}

// maxRaw is the most raw payload bytes a record may carry: the limit in the
// msgp tag of Record.Raw.
const maxRaw = 16 << 20
