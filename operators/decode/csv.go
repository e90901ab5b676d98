package decode

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/pspf/pspf-edge/agent"
)

// csv reads one CSV line: RFC 4180 quoting ("" is a quote inside a quoted
// cell), a trailing line break ignored, a line break elsewhere only inside
// quotes. The cells are unquoted into d.buf; d.cells holds their ends.
func (d *Decoder) csv(data []byte, r *agent.Record) error {
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	delim := d.cfg.CSV.Delimiter[0]
	cols := d.cfg.CSV.Columns
	buf, cells := d.buf[:0], d.cells[:0]
	defer func() { d.buf, d.cells = buf[:0], cells[:0] }()
	i := 0
	for {
		if len(cells) == len(cols) {
			return fmt.Errorf("more than the %d cells of the columns", len(cols))
		}
		if i < len(data) && data[i] == '"' {
			i++
			for {
				if i >= len(data) {
					return fmt.Errorf("cell %d: unterminated quote", len(cells)+1)
				}
				c := data[i]
				i++
				if c == '"' {
					if i < len(data) && data[i] == '"' {
						buf = append(buf, '"')
						i++
						continue
					}
					break
				}
				buf = append(buf, c)
			}
			if i < len(data) && data[i] != delim {
				return fmt.Errorf("cell %d: unexpected %q after a quoted cell", len(cells)+1, data[i])
			}
		} else {
			for i < len(data) && data[i] != delim {
				switch c := data[i]; c {
				case '"':
					return fmt.Errorf("cell %d: quote inside an unquoted cell", len(cells)+1)
				case '\n', '\r':
					return fmt.Errorf("cell %d: line break outside quotes: one line per payload", len(cells)+1)
				}
				buf = append(buf, data[i])
				i++
			}
		}
		cells = append(cells, len(buf))
		if i >= len(data) {
			break
		}
		i++ // the delimiter
	}
	if len(cells) != len(cols) {
		return fmt.Errorf("got %d cells, want %d (one per column)", len(cells), len(cols))
	}
	cell := func(i int) []byte {
		start := 0
		if i > 0 {
			start = cells[i-1]
		}
		return buf[start:cells[i]]
	}
	if d.cfg.CSV.SkipHeader {
		header := true
		for i, c := range cols {
			if string(cell(i)) != c.Name {
				header = false
				break
			}
		}
		if header {
			return errHeader
		}
	}
	for i, c := range cols {
		f, ok, err := d.csvField(c, cell(i))
		if err != nil {
			return fmt.Errorf("column %s: %w", c.Name, err)
		}
		if ok {
			if err := d.add(r, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// csvField converts one cell; ok is false for an empty cell of a non-string column.
func (d *Decoder) csvField(c Column, cell []byte) (f agent.Field, ok bool, err error) {
	f.Name = c.Name
	if c.Type == "string" {
		f.Kind, f.Str = agent.KindString, d.str(cell)
		return f, true, nil
	}
	t := bytes.TrimSpace(cell)
	if len(t) == 0 {
		return f, false, nil
	}
	s := view(t)
	switch c.Type {
	case "int":
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return f, false, fmt.Errorf("%q is not an int", t)
		}
		f.Kind, f.Int = agent.KindInt, v
	case "float":
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return f, false, fmt.Errorf("%q is not a number", t)
		}
		f.Kind, f.Float = agent.KindFloat, v
	case "bool":
		v, err := strconv.ParseBool(s)
		if err != nil {
			return f, false, fmt.Errorf("%q is not true or false", t)
		}
		f = agent.Bool(c.Name, v)
	default: // auto
		f = d.autoField(c.Name, cell, t)
	}
	return f, true, nil
}

// autoField types a cell of an auto column: an int, a float, a bool or a
// string, whichever it reads as first. t is the cell without surrounding
// space. strconv's errors allocate: a cell that cannot be an int or a float
// (a sensor name, true) is not offered to it.
func (d *Decoder) autoField(name string, cell, t []byte) agent.Field {
	s := view(t)
	if maybeInt(t) {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			return agent.Field{Name: name, Kind: agent.KindInt, Int: v}
		}
	}
	if maybeFloat(t) {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			return agent.Field{Name: name, Kind: agent.KindFloat, Float: v}
		}
	}
	if s == "true" || s == "false" {
		return agent.Bool(name, s == "true")
	}
	return agent.Field{Name: name, Kind: agent.KindString, Str: d.str(cell)}
}

// maybeInt reports whether strconv.ParseInt(base 10) could accept b: a sign
// and digits.
func maybeInt(b []byte) bool {
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		b = b[1:]
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// maybeFloat reports whether strconv.ParseFloat could accept b: what it
// accepts starts, after a sign, with a digit, a point, inf or nan.
func maybeFloat(b []byte) bool {
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	switch c := b[0] | 0x20; {
	case b[0] >= '0' && b[0] <= '9', b[0] == '.', c == 'i', c == 'n':
		return true
	}
	return false
}
