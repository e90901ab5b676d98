package postgres

import (
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pspf/pspf-edge/agent"
)

// kind is how a column's values are sent: the element type of the array
// parameter that carries them.
type kind uint8

const (
	kFloat  kind = iota + 1 // float8[]
	kInt                    // int8[]
	kString                 // text[]
	kBool                   // bool[]
	kBytes                  // bytea[]
	kTime                   // timestamptz[]
	kJSON                   // text[], cast to the column's type
)

var kindOf = map[string]kind{"float": kFloat, "int": kInt, "string": kString, "bool": kBool, "bytes": kBytes, "time": kTime, "json": kJSON}

// arrayType is the parameter's SQL type.
func (k kind) arrayType() string {
	switch k {
	case kFloat:
		return "float8[]"
	case kInt:
		return "int8[]"
	case kBool:
		return "bool[]"
	case kBytes:
		return "bytea[]"
	case kTime:
		return "timestamptz[]"
	}
	return "text[]"
}

// columnType is the type create_table gives the column.
func (k kind) columnType() string {
	switch k {
	case kFloat:
		return "double precision"
	case kInt:
		return "bigint"
	case kBool:
		return "boolean"
	case kBytes:
		return "bytea"
	case kTime:
		return "timestamptz"
	case kJSON:
		return "jsonb"
	}
	return "text"
}

// source is where a column's value comes from.
type source uint8

const (
	fromField source = iota
	fromID
	fromTime // event time, else receive time
	fromKey
	fromSource
	fromEventTime
	fromRecvTime
	fromRaw
)

// column is one column of the insert: its name, where its values come
// from, its type (kind), how its values travel (wire: the element type of
// the array parameter), and its values for the batch at hand.
type column struct {
	name  string
	field string
	from  source
	kind  kind
	wire  kind
	cast  string // an explicit cast to the column's type, or ""

	f []pgtype.Float8
	i []pgtype.Int8
	s []pgtype.Text
	b []pgtype.Bool
	y [][]byte
	t []pgtype.Timestamptz
}

// wireOf is how values of kind k from source from travel: JSON, and times
// given as text in a record field, as text that the server casts.
func wireOf(k kind, from source) kind {
	switch {
	case k == kJSON:
		return kString
	case k == kTime && from == fromField:
		return kString
	}
	return k
}

// reset empties the column's values, keeping their capacity.
func (c *column) reset() { c.truncate(0) }

// truncate cuts the column's values back to n rows.
func (c *column) truncate(n int) {
	switch c.wire {
	case kFloat:
		c.f = c.f[:n]
	case kInt:
		c.i = c.i[:n]
	case kBool:
		c.b = c.b[:n]
	case kBytes:
		c.y = c.y[:n]
	case kTime:
		c.t = c.t[:n]
	default:
		c.s = c.s[:n]
	}
}

// len returns the number of rows the column holds.
func (c *column) len() int {
	switch c.wire {
	case kFloat:
		return len(c.f)
	case kInt:
		return len(c.i)
	case kBool:
		return len(c.b)
	case kBytes:
		return len(c.y)
	case kTime:
		return len(c.t)
	}
	return len(c.s)
}

// values returns the column's values as the statement's parameter.
func (c *column) values() any {
	switch c.wire {
	case kFloat:
		return c.f
	case kInt:
		return c.i
	case kBool:
		return c.b
	case kBytes:
		return c.y
	case kTime:
		return c.t
	}
	return c.s
}

// pick appends the values of rows idx of src (the same column) to c.
func (c *column) pick(src *column, idx []int) {
	for _, j := range idx {
		switch c.wire {
		case kFloat:
			c.f = append(c.f, src.f[j])
		case kInt:
			c.i = append(c.i, src.i[j])
		case kBool:
			c.b = append(c.b, src.b[j])
		case kBytes:
			c.y = append(c.y, src.y[j])
		case kTime:
			c.t = append(c.t, src.t[j])
		default:
			c.s = append(c.s, src.s[j])
		}
	}
}

// add appends r's value for the column: NULL for a field the record does
// not have. A value that does not fit the column's type (a string for a
// float column, 1.5 for an int column) is an error and appends nothing:
// the caller sends the record to the dead letters and cuts the columns
// before this one back.
func (c *column) add(r *agent.Record) error {
	switch c.from {
	case fromID:
		c.s = append(c.s, pgtype.Text{String: r.ID, Valid: true})
		return nil
	case fromTime:
		c.t = append(c.t, pgtype.Timestamptz{Time: r.Time(), Valid: true})
		return nil
	case fromKey:
		return c.addText(r.Key, true)
	case fromSource:
		return c.addText(r.Source, true)
	case fromEventTime:
		return c.addTime(r.EventTime)
	case fromRecvTime:
		return c.addTime(r.RecvTime)
	case fromRaw:
		return c.addBytes(r.Raw)
	}
	f := r.Field(c.field)
	if f == nil {
		c.null()
		return nil
	}
	switch c.kind {
	case kFloat:
		switch f.Kind {
		case agent.KindFloat:
			c.f = append(c.f, pgtype.Float8{Float64: f.Float, Valid: true})
			return nil
		case agent.KindInt:
			c.f = append(c.f, pgtype.Float8{Float64: float64(f.Int), Valid: true})
			return nil
		}
	case kInt:
		switch f.Kind {
		case agent.KindInt:
			c.i = append(c.i, pgtype.Int8{Int64: f.Int, Valid: true})
			return nil
		case agent.KindFloat:
			// A JSON 21.0 may decode as a float: an integral value within
			// int64 is taken as it is, anything else is refused.
			if f.Float == math.Trunc(f.Float) && f.Float >= -(1<<63) && f.Float < 1<<63 {
				c.i = append(c.i, pgtype.Int8{Int64: int64(f.Float), Valid: true})
				return nil
			}
		}
	case kBool:
		if f.Kind == agent.KindBool {
			c.b = append(c.b, pgtype.Bool{Bool: f.Int != 0, Valid: true})
			return nil
		}
	case kBytes:
		switch f.Kind {
		case agent.KindBytes:
			return c.addBytes(f.Bytes)
		case agent.KindString:
			return c.addBytes([]byte(f.Str))
		}
	case kString, kJSON:
		// Numbers and bools as text: for json they are documents of
		// their own.
		switch f.Kind {
		case agent.KindString:
			return c.addText(f.Str, true)
		case agent.KindBytes:
			return c.addText(string(f.Bytes), true)
		default:
			return c.addText(string(f.AppendText(nil)), true)
		}
	case kTime:
		if f.Kind == agent.KindString {
			// Parsed by the server, as any timestamptz input it accepts; a
			// bad one is that row's error there.
			return c.addText(f.Str, true)
		}
	}
	return fmt.Errorf("field %q is %s, column %q takes %s", c.field, f.Kind, c.name, typeName(c.kind))
}

func (c *column) addText(s string, valid bool) error {
	switch c.wire {
	case kString:
		c.s = append(c.s, pgtype.Text{String: s, Valid: valid})
	case kBytes:
		if !valid {
			c.y = append(c.y, nil)
			return nil
		}
		c.y = append(c.y, []byte(s))
	default:
		return fmt.Errorf("column %q takes %s, not text", c.name, typeName(c.kind))
	}
	return nil
}

func (c *column) addBytes(b []byte) error {
	if c.wire == kBytes {
		c.y = append(c.y, b) // nil (no payload) is NULL
		return nil
	}
	return c.addText(string(b), b != nil)
}

func (c *column) addTime(ns int64) error {
	if c.wire == kTime {
		c.t = append(c.t, pgtype.Timestamptz{Time: time.Unix(0, ns), Valid: ns != 0})
		return nil
	}
	return c.addText(time.Unix(0, ns).UTC().Format(time.RFC3339Nano), ns != 0)
}

// null appends a NULL.
func (c *column) null() {
	switch c.wire {
	case kFloat:
		c.f = append(c.f, pgtype.Float8{})
	case kInt:
		c.i = append(c.i, pgtype.Int8{})
	case kBool:
		c.b = append(c.b, pgtype.Bool{})
	case kBytes:
		c.y = append(c.y, nil)
	case kTime:
		c.t = append(c.t, pgtype.Timestamptz{})
	default:
		c.s = append(c.s, pgtype.Text{})
	}
}

func typeName(k kind) string {
	for n, v := range kindOf {
		if v == k {
			return n
		}
	}
	return "?"
}
