package agent

import (
	"fmt"

	"github.com/tinylib/msgp/msgp"
)

// A Field is encoded as a msgpack array [name, kind, value] where value has the
// type its kind calls for. This keeps a float field at 1+len(name)+1+9 bytes.

// MarshalMsg appends the field's msgpack encoding to b.
func (f *Field) MarshalMsg(b []byte) ([]byte, error) {
	b = msgp.AppendArrayHeader(b, 3)
	b = msgp.AppendString(b, f.Name)
	b = msgp.AppendUint8(b, uint8(f.Kind))
	switch f.Kind {
	case KindFloat:
		b = msgp.AppendFloat64(b, f.Float)
	case KindInt:
		b = msgp.AppendInt64(b, f.Int)
	case KindBool:
		b = msgp.AppendBool(b, f.Int != 0)
	case KindString:
		b = msgp.AppendString(b, f.Str)
	case KindBytes:
		b = msgp.AppendBytes(b, f.Bytes)
	default:
		return b, fmt.Errorf("record: field %q: invalid kind %d", f.Name, f.Kind)
	}
	return b, nil
}

// UnmarshalMsg decodes a field from the front of b and returns the rest.
// The field's strings and bytes are copies: they do not alias b.
func (f *Field) UnmarshalMsg(b []byte) ([]byte, error) {
	return f.unmarshal(b, nil)
}

// unmarshal decodes a field like UnmarshalMsg; with an arena, its strings
// are cut from it rather than allocated one by one.
func (f *Field) unmarshal(b []byte, a *StringArena) ([]byte, error) {
	n, b, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return b, err
	}
	if n != 3 {
		return b, msgp.ArrayError{Wanted: 3, Got: n}
	}
	if f.Name, b, err = a.read(b); err != nil {
		return b, err
	}
	var k uint8
	if k, b, err = msgp.ReadUint8Bytes(b); err != nil {
		return b, err
	}
	f.Kind = Kind(k)
	f.Float, f.Int, f.Str, f.Bytes = 0, 0, "", nil
	switch f.Kind {
	case KindFloat:
		f.Float, b, err = msgp.ReadFloat64Bytes(b)
	case KindInt:
		f.Int, b, err = msgp.ReadInt64Bytes(b)
	case KindBool:
		var v bool
		v, b, err = msgp.ReadBoolBytes(b)
		if v {
			f.Int = 1
		}
	case KindString:
		f.Str, b, err = a.read(b)
	case KindBytes:
		f.Bytes, b, err = msgp.ReadBytesBytes(b, nil)
	default:
		return b, fmt.Errorf("record: field %q: invalid kind %d", f.Name, k)
	}
	return b, err
}

// EncodeMsg writes the field to w.
func (f *Field) EncodeMsg(w *msgp.Writer) error {
	if err := w.WriteArrayHeader(3); err != nil {
		return err
	}
	if err := w.WriteString(f.Name); err != nil {
		return err
	}
	if err := w.WriteUint8(uint8(f.Kind)); err != nil {
		return err
	}
	switch f.Kind {
	case KindFloat:
		return w.WriteFloat64(f.Float)
	case KindInt:
		return w.WriteInt64(f.Int)
	case KindBool:
		return w.WriteBool(f.Int != 0)
	case KindString:
		return w.WriteString(f.Str)
	case KindBytes:
		return w.WriteBytes(f.Bytes)
	}
	return fmt.Errorf("record: field %q: invalid kind %d", f.Name, f.Kind)
}

// DecodeMsg reads a field from r.
func (f *Field) DecodeMsg(r *msgp.Reader) error {
	n, err := r.ReadArrayHeader()
	if err != nil {
		return err
	}
	if n != 3 {
		return msgp.ArrayError{Wanted: 3, Got: n}
	}
	if f.Name, err = r.ReadString(); err != nil {
		return err
	}
	k, err := r.ReadUint8()
	if err != nil {
		return err
	}
	f.Kind = Kind(k)
	f.Float, f.Int, f.Str, f.Bytes = 0, 0, "", nil
	switch f.Kind {
	case KindFloat:
		f.Float, err = r.ReadFloat64()
	case KindInt:
		f.Int, err = r.ReadInt64()
	case KindBool:
		var v bool
		v, err = r.ReadBool()
		if v {
			f.Int = 1
		}
	case KindString:
		f.Str, err = r.ReadString()
	case KindBytes:
		f.Bytes, err = r.ReadBytes(nil)
	default:
		return fmt.Errorf("record: field %q: invalid kind %d", f.Name, k)
	}
	return err
}

// Msgsize returns an upper bound of the field's encoded size.
func (f *Field) Msgsize() int {
	return 1 + msgp.StringPrefixSize + len(f.Name) + 2 + 9 + msgp.StringPrefixSize + len(f.Str) + msgp.BytesPrefixSize + len(f.Bytes)
}
