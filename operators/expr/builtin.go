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
		out = c.stringTest(&ast.BinaryNode{Operator: op, Left: n.Arguments[0], Right: n.Arguments[1]}, args[0], args[1])
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
	return cnode{typ: TypeNumber, eval: func(rec *agent.Record) (Value, error) {
		v, err := e(rec)
		if err != nil {
			return Value{}, err
		}
		if v.Kind == agent.KindString && (name == "int" || name == "float") {
			if i, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64); err == nil {
				v = intV(i)
			} else if f, err := strconv.ParseFloat(strings.TrimSpace(v.Str), 64); err == nil {
				v = floatV(f)
			} else {
				return Value{}, bad
			}
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
				if !finite(v.Float) {
					return Value{}, bad
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
	return cnode{typ: TypeNumber, eval: func(rec *agent.Record) (Value, error) {
		var best Value
		var bestF float64
		for i, e := range evals {
			v, err := e(rec)
			if err != nil {
				return Value{}, err
			}
			f, ok := number(v)
			if !ok {
				return Value{}, bad
			}
			if i == 0 || (isMax && f > bestF) || (!isMax && f < bestF) {
				best, bestF = v, f
			}
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
