package expr

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"

	"github.com/pspf/pspf-edge/agent"
)

// builtin compiles the builtins of the subset; the others fall back.
func (c *compiler) builtin(n *ast.BuiltinNode) (cnode, error) {
	args := make([]cnode, len(n.Arguments))
	for i, a := range n.Arguments {
		var err error
		if args[i], err = c.compile(a); err != nil {
			return cnode{}, err
		}
	}
	var out cnode
	switch n.Name {
	case "abs", "ceil", "floor", "round", "float", "int":
		if len(args) != 1 {
			return cnode{}, &unsupportedError{n.Name + " arity"}
		}
		out = c.numeric1(n, args[0])
	case "min", "max":
		if len(args) == 0 {
			return cnode{}, &unsupportedError{n.Name + " arity"}
		}
		out = c.minMax(n, args)
	case "len", "lower", "upper", "trim":
		if len(args) != 1 {
			return cnode{}, &unsupportedError{n.Name + " arity"}
		}
		out = c.string1(n, args[0])
	case "hasPrefix", "hasSuffix":
		if len(args) != 2 {
			return cnode{}, &unsupportedError{n.Name + " arity"}
		}
		op := "startsWith"
		if n.Name == "hasSuffix" {
			op = "endsWith"
		}
		out = c.stringTest(n, op, n.Name, args[0], args[1])
	default:
		return cnode{}, &unsupportedError{"builtin " + n.Name}
	}
	return c.fold(n, out, args...)
}

func (c *compiler) numeric1(n *ast.BuiltinNode, x cnode) cnode {
	e := x.eval
	name := n.Name
	bad := c.evalErr(n, "%s needs a number", name)
	if name == "int" || name == "float" {
		bad = c.evalErr(n, "%s needs a number or a numeric string", name)
	}
	outOfRange := c.evalErr(n, "int needs a number within the range of a 64-bit integer")
	return cnode{typ: TypeNumber, eval: func(rec *agent.Record) (Value, error) {
		v, err := e(rec)
		if err != nil {
			return Value{}, err
		}
		// A string is read as expr reads it: int takes a decimal integer,
		// float any Go float; no spaces around either.
		if v.Kind == agent.KindString && name == "int" {
			i, err := strconv.ParseInt(v.Str, 10, 64)
			if err != nil {
				return Value{}, bad
			}
			return intV(i), nil
		}
		if v.Kind == agent.KindString && name == "float" {
			f, err := strconv.ParseFloat(v.Str, 64)
			if err != nil {
				return Value{}, bad
			}
			return floatV(f), nil
		}
		switch v.Kind {
		case agent.KindInt:
			switch name {
			case "abs":
				if v.Int < 0 {
					v.Int = -v.Int
				}
				return v, nil
			case "float", "round", "ceil", "floor":
				return floatV(float64(v.Int)), nil
			}
			return v, nil
		case agent.KindFloat:
			switch name {
			case "abs":
				return floatV(math.Abs(v.Float)), nil
			case "ceil":
				return floatV(math.Ceil(v.Float)), nil
			case "floor":
				return floatV(math.Floor(v.Float)), nil
			case "round":
				return floatV(math.Round(v.Float)), nil
			case "int":
				if !inIntRange(v.Float) {
					return Value{}, outOfRange
				}
				return intV(int64(v.Float)), nil
			}
			return v, nil
		}
		return Value{}, bad
	}}
}

func (c *compiler) minMax(n *ast.BuiltinNode, args []cnode) cnode {
	evals := make([]evalFn, len(args))
	for i, a := range args {
		evals[i] = a.eval
	}
	isMax := n.Name == "max"
	bad := c.evalErr(n, "%s needs numbers", n.Name)
	if len(evals) == 1 {
		// expr gives back a single argument whatever it is (max(x) is x,
		// a string or nil too); only two or more must be numbers.
		return cnode{typ: args[0].typ, eval: evals[0]}
	}
	// max replaces the best so far with a value it is less than, min with
	// one it is greater than: integers compared as integers, as expr does.
	replace := opLT
	if !isMax {
		replace = opGT
	}
	return cnode{typ: TypeNumber, eval: func(rec *agent.Record) (Value, error) {
		var best Value
		// Every argument is evaluated before any is checked, as expr does:
		// a missing field later in the list is the error, not an earlier
		// string.
		notNumber := false
		for i, e := range evals {
			v, err := e(rec)
			if err != nil {
				return Value{}, err
			}
			if _, ok := number(v); !ok {
				notNumber = true
				continue
			}
			if i == 0 {
				best = v
			} else if less, _ := order(replace, best, v); less {
				best = v
			}
		}
		if notNumber {
			return Value{}, bad
		}
		return best, nil
	}}
}

func (c *compiler) string1(n *ast.BuiltinNode, x cnode) cnode {
	e := x.eval
	name := n.Name
	bad := c.evalErr(n, "%s needs a string", name)
	typ := TypeString
	if name == "len" {
		typ = TypeNumber
	}
	return cnode{typ: typ, eval: func(rec *agent.Record) (Value, error) {
		v, err := e(rec)
		if err != nil {
			return Value{}, err
		}
		if v.Kind != agent.KindString {
			return Value{}, bad
		}
		switch name {
		case "len":
			return intV(int64(utf8.RuneCountInString(v.Str))), nil
		case "lower":
			v.Str = strings.ToLower(v.Str)
		case "upper":
			v.Str = strings.ToUpper(v.Str)
		default:
			v.Str = strings.TrimSpace(v.Str)
		}
		return v, nil
	}}
}

// inIntRange reports whether f converts to an int64 without leaving its
// range (Go leaves the result of such a conversion to the machine: the same
// expression would give different numbers on amd64 and arm64).
func inIntRange(f float64) bool { return f >= -0x1p63 && f < 0x1p63 }
