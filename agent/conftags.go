package agent

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// fieldRule is what a config field's tags ask of its value beyond its type:
//
//	required:"true"          the value, written or default, is not empty
//	min:"1" max:"65536"      a number within a range, bounds included
//	min:">0"                 a bound left out: greater than 0
//	min:"64KiB" max:"1GiB"   a ByteSize, its bounds written as sizes
//	min:"10ms" max:"1m"      a time.Duration, its bounds written as durations
//
// min and max apply to integers, floats, durations and sizes; required to
// any type (the zero value is empty). Tags that do not parse are a
// programming error: decoding the type panics, whatever the input.
type fieldRule struct {
	required bool
	min, max bound
	kind     boundKind
}

type boundKind uint8

const (
	boundInt boundKind = iota + 1 // signed integers, durations, sizes
	boundUint
	boundFloat
)

// bound is one end of a range, with its text as written in the tag, which
// messages quote.
type bound struct {
	set, exclusive bool
	text           string
	i              int64
	u              uint64
	f              float64
}

// parseRule reads the rule tags of a config struct field.
func parseRule(f reflect.StructField) fieldRule {
	var r fieldRule
	if v, ok := f.Tag.Lookup("required"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			panic(fmt.Sprintf("agent: config field %s: required:%q: want true or false", f.Name, v))
		}
		r.required = b
	}
	minTag, hasMin := f.Tag.Lookup("min")
	maxTag, hasMax := f.Tag.Lookup("max")
	if !hasMin && !hasMax {
		return r
	}
	t := f.Type
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		r.kind = boundInt
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		r.kind = boundUint
	case reflect.Float32, reflect.Float64:
		r.kind = boundFloat
	default:
		panic(fmt.Sprintf("agent: config field %s: min and max need a number, a duration or a size, not %s", f.Name, t))
	}
	if hasMin {
		r.min = parseBound(f.Name, t, minTag, true)
	}
	if hasMax {
		r.max = parseBound(f.Name, t, maxTag, false)
	}
	return r
}

func parseBound(field string, t reflect.Type, tag string, lower bool) bound {
	b := bound{set: true, text: tag}
	if lower {
		b.text, b.exclusive = strings.CutPrefix(tag, ">")
	}
	var err error
	switch {
	case t == durationType:
		var d time.Duration
		d, err = time.ParseDuration(b.text)
		b.i = int64(d)
	case t == byteSizeType:
		var s ByteSize
		s, err = parseByteSize(b.text)
		b.i = int64(s)
	default:
		switch t.Kind() {
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			b.u, err = strconv.ParseUint(b.text, 10, t.Bits())
		case reflect.Float32, reflect.Float64:
			b.f, err = strconv.ParseFloat(b.text, 64)
		default:
			b.i, err = strconv.ParseInt(b.text, 10, t.Bits())
		}
	}
	if err != nil {
		panic(fmt.Sprintf("agent: config field %s: bound %q does not parse as a %s: %v", field, tag, t, err))
	}
	return b
}

// zero reports whether the bound is 0.
func (b bound) zero() bool { return b.i == 0 && b.u == 0 && b.f == 0 }

// below reports whether v is below the lower bound b.
func (r fieldRule) below(v reflect.Value) bool {
	b := r.min
	switch r.kind {
	case boundInt:
		return v.Int() < b.i || b.exclusive && v.Int() == b.i
	case boundUint:
		return v.Uint() < b.u || b.exclusive && v.Uint() == b.u
	}
	if b.exclusive {
		return !(v.Float() > b.f) // NaN is in no range
	}
	return !(v.Float() >= b.f)
}

// above reports whether v is above the upper bound.
func (r fieldRule) above(v reflect.Value) bool {
	switch r.kind {
	case boundInt:
		return v.Int() > r.max.i
	case boundUint:
		return v.Uint() > r.max.u
	}
	return !(v.Float() <= r.max.f)
}

// rangeMsg says what the range is, as the hand-written rules of the
// connectors used to: "must be between 1 and 65536", "must be positive".
func (r fieldRule) rangeMsg() string {
	lo, hi := r.min, r.max
	switch {
	case lo.set && hi.set && lo.exclusive:
		return "must be greater than " + lo.text + " and at most " + hi.text
	case lo.set && hi.set:
		return "must be between " + lo.text + " and " + hi.text
	case hi.set:
		return "must be at most " + hi.text
	case lo.exclusive && lo.zero():
		return "must be positive"
	case lo.exclusive:
		return "must be greater than " + lo.text
	case lo.zero():
		return "must not be negative"
	}
	return "must be at least " + lo.text
}

// check applies the rule to v, decoded from n without an error.
func (r fieldRule) check(n Node, v reflect.Value) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			r.checkRequired(n, v)
			return
		}
		v = v.Elem()
	}
	if r.kind != 0 && (r.min.set && r.below(v) || r.max.set && r.above(v)) {
		n.Errorf("%s, got %q", r.rangeMsg(), n.Text())
		return
	}
	r.checkRequired(n, v)
}

// checkRequired reports a required value that is empty.
func (r fieldRule) checkRequired(n Node, v reflect.Value) {
	if r.required && v.IsZero() {
		n.Errorf("must not be empty")
	}
}

// checkAbsent applies the required rules to the fields of struct v whose
// keys are not written under n (seen says which are): a default that is
// empty breaks them.
func checkAbsent(n Node, v reflect.Value, fields []structField, seen map[string]bool) {
	for _, f := range fields {
		if f.rule.required && !seen[f.key] {
			f.rule.checkRequired(n.Field(f.key), v.FieldByIndex(f.index))
		}
	}
}

// CheckDefaults checks v, a pointer to a config struct that keeps its
// defaults because n, where it would be written, is absent or empty (a
// component written as `- console:` with no body): the required tags of its
// fields and its Validator, as Decode checks a decoded value. It reports
// whether no error was found.
func (n Node) CheckDefaults(v any) bool {
	before := len(n.doc.errs)
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("agent: Node.CheckDefaults needs a non-nil pointer") // a programming error, never input
	}
	if e := rv.Elem(); e.Kind() == reflect.Struct {
		checkAbsent(n, e, configFields(e.Type()), nil)
	}
	if val, ok := v.(Validator); ok {
		val.Validate(n)
	}
	return len(n.doc.errs) == before
}
