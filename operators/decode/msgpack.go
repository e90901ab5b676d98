package decode

import (
	"errors"
	"fmt"
	"math"

	"github.com/tinylib/msgp/msgp"

	"github.com/pspf/pspf-edge/agent"
)

func (d *Decoder) msgpack(data []byte, r *agent.Record) error {
	if msgp.NextType(data) != msgp.MapType {
		return errors.New("payload is not a msgpack map")
	}
	rest, err := d.msgpackMap(data, r, 1)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("offset %d: unexpected data after the map", len(data)-len(rest))
	}
	return nil
}

// msgpackMap reads a map into fields named after d.name and returns the rest of b.
func (d *Decoder) msgpackMap(b []byte, r *agent.Record, depth int) ([]byte, error) {
	if depth > d.cfg.MaxDepth {
		return b, fmt.Errorf("nested deeper than max_depth (%d)", d.cfg.MaxDepth)
	}
	sz, b, err := msgp.ReadMapHeaderBytes(b)
	if err != nil {
		return b, err
	}
	// Every entry takes at least two bytes: refuse a header that claims more
	// than the payload holds before looping on it.
	if uint64(sz) > uint64(len(b))/2 {
		return b, fmt.Errorf("map of %d entries is longer than the payload", sz)
	}
	base := len(d.name)
	for range sz {
		var key []byte
		if key, b, err = msgp.ReadMapKeyZC(b); err != nil {
			return b, fmt.Errorf("map key: %w", err)
		}
		d.name = d.name[:base]
		if base > 0 {
			d.name = append(d.name, '.')
		}
		d.name = append(d.name, key...)
		if b, err = d.msgpackValue(b, r, depth); err != nil {
			return b, err
		}
	}
	d.name = d.name[:base]
	return b, nil
}

func (d *Decoder) msgpackValue(b []byte, r *agent.Record, depth int) ([]byte, error) {
	var err error
	var f agent.Field
	switch t := msgp.NextType(b); t {
	case msgp.MapType:
		return d.msgpackMap(b, r, depth+1)
	case msgp.ArrayType:
		start := b
		if b, err = msgp.Skip(b); err != nil {
			return b, fmt.Errorf("field %s: %w", d.name, err)
		}
		if d.cfg.Arrays == "reject" {
			return b, fmt.Errorf("field %s is an array (arrays: reject)", d.name)
		}
		f = agent.Field{Kind: agent.KindBytes, Bytes: append([]byte(nil), start[:len(start)-len(b)]...)}
	case msgp.StrType:
		var v []byte
		if v, b, err = msgp.ReadStringZC(b); err == nil {
			f = agent.Field{Kind: agent.KindString, Str: d.str(v)}
		}
	case msgp.BinType:
		var v []byte
		if v, b, err = msgp.ReadBytesZC(b); err == nil {
			f = agent.Field{Kind: agent.KindBytes, Bytes: append([]byte(nil), v...)}
		}
	case msgp.Float64Type:
		f.Kind = agent.KindFloat
		f.Float, b, err = msgp.ReadFloat64Bytes(b)
	case msgp.Float32Type:
		var v float32
		v, b, err = msgp.ReadFloat32Bytes(b)
		f = agent.Field{Kind: agent.KindFloat, Float: float64(v)}
	case msgp.IntType:
		f.Kind = agent.KindInt
		f.Int, b, err = msgp.ReadInt64Bytes(b)
	case msgp.UintType:
		var u uint64
		if u, b, err = msgp.ReadUint64Bytes(b); err == nil {
			if u > math.MaxInt64 {
				f = agent.Field{Kind: agent.KindFloat, Float: float64(u)}
			} else {
				f = agent.Field{Kind: agent.KindInt, Int: int64(u)}
			}
		}
	case msgp.BoolType:
		var v bool
		v, b, err = msgp.ReadBoolBytes(b)
		f = agent.Bool("", v)
	case msgp.NilType:
		b, err = msgp.ReadNilBytes(b)
		if err != nil {
			return b, fmt.Errorf("field %s: %w", d.name, err)
		}
		return b, nil
	case msgp.TimeType:
		tm, rest, err2 := msgp.ReadTimeBytes(b)
		b, err = rest, err2
		f = agent.Field{Kind: agent.KindInt, Int: tm.UnixNano()}
	case msgp.InvalidType:
		return b, fmt.Errorf("field %s: truncated or invalid value", d.name)
	default:
		return b, fmt.Errorf("field %s: unsupported msgpack type %s", d.name, t)
	}
	if err != nil {
		return b, fmt.Errorf("field %s: %w", d.name, err)
	}
	f.Name = d.names.get(d.name)
	return b, d.add(r, f)
}
