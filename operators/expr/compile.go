package expr

import (
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/expr-lang/expr/ast"

	"github.com/pspf/pspf-edge/agent"
)

// evalFn evaluates one compiled node on a record.
type evalFn func(r *agent.Record) (Value, error)

// cnode is a compiled node: its closure, its static type and, for a constant
// node, its value (so that parents can specialise on it).
type cnode struct {
	eval  evalFn
	typ   Type
	konst bool
	val   Value
	// field is set for a bare field name, so that parents can look it up
	// themselves and save a call.
	field   string
	missing *EvalError
}

// unsupportedError marks a node outside the compiled subset; Compile falls
// back to expr's virtual machine.
type unsupportedError struct{ what string }

func (e *unsupportedError) Error() string { return "not compiled: " + e.what }

type compiler struct{ src string }

func (c *compiler) column(n ast.Node) int {
	_, col := position(c.src, n.Location().From)
	return col
}

func (c *compiler) errorAt(n ast.Node, format string, args ...any) error {
	line, col := position(c.src, n.Location().From)
	return &CompileError{Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

func (c *compiler) evalErr(n ast.Node, format string, args ...any) *EvalError {
	return &EvalError{Column: c.column(n), Msg: fmt.Sprintf(format, args...)}
}

func typeOf(v Value) Type {
	switch v.Kind {
	case agent.KindBool:
		return TypeBool
	case agent.KindFloat, agent.KindInt:
		return TypeNumber
	case agent.KindString:
		return TypeString
	}
	return TypeNil
}

func constant(v Value) cnode {
	return cnode{eval: func(*agent.Record) (Value, error) { return v, nil }, typ: typeOf(v), konst: true, val: v}
}

func boolV(b bool) Value {
	if b {
		return Value{Kind: agent.KindBool, Int: 1}
	}
	return Value{Kind: agent.KindBool}
}

func floatV(f float64) Value { return Value{Kind: agent.KindFloat, Float: f} }
func intV(i int64) Value     { return Value{Kind: agent.KindInt, Int: i} }

// fold evaluates a node whose operands are all constants once, at compile time.
func (c *compiler) fold(n ast.Node, cn cnode, operands ...cnode) (cnode, error) {
	for _, o := range operands {
		if !o.konst {
			return cn, nil
		}
	}
	v, err := cn.eval(nil)
	if err != nil {
		return cn, c.errorAt(n, "%s", err.(*EvalError).Msg)
	}
	k := constant(v)
	if cn.typ != TypeUnknown && k.typ != cn.typ && k.typ != TypeNil {
		k.typ = cn.typ
	}
	return k, nil
}

func (c *compiler) compile(n ast.Node) (cnode, error) {
	switch n := n.(type) {
	case *ast.IntegerNode:
		return constant(intV(int64(n.Value))), nil
	case *ast.FloatNode:
		return constant(floatV(n.Value)), nil
	case *ast.BoolNode:
		return constant(boolV(n.Value)), nil
	case *ast.StringNode:
		return constant(Value{Kind: agent.KindString, Str: n.Value}), nil
	case *ast.NilNode:
		return constant(Value{}), nil
	case *ast.ConstantNode:
		switch v := n.Value.(type) {
		case int:
			return constant(intV(int64(v))), nil
		case int64:
			return constant(intV(v)), nil
		case float64:
			return constant(floatV(v)), nil
		case string:
			return constant(Value{Kind: agent.KindString, Str: v}), nil
		case bool:
			return constant(boolV(v)), nil
		}
		return cnode{}, &unsupportedError{"constant"}
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			return cnode{}, &unsupportedError{"$env"}
		}
		return c.ident(n), nil
	case *ast.ChainNode:
		return c.compile(n.Node)
	case *ast.UnaryNode:
		return c.unary(n)
	case *ast.BinaryNode:
		return c.binary(n)
	case *ast.ConditionalNode:
		return c.conditional(n)
	case *ast.BuiltinNode:
		return c.builtin(n)
	}
	return cnode{}, &unsupportedError{fmt.Sprintf("%T", n)}
}

// lookup returns the named field of r as a Value.
func lookup(r *agent.Record, name string) (Value, bool) {
	for i := range r.Fields {
		f := &r.Fields[i]
		if f.Name != name {
			continue
		}
		switch f.Kind {
		case agent.KindFloat:
			return Value{Kind: agent.KindFloat, Float: f.Float}, true
		case agent.KindInt:
			return Value{Kind: agent.KindInt, Int: f.Int}, true
		case agent.KindBool:
			return Value{Kind: agent.KindBool, Int: f.Int}, true
		case agent.KindString:
			return Value{Kind: agent.KindString, Str: f.Str}, true
		case agent.KindBytes:
			return Value{Kind: agent.KindString, Str: string(f.Bytes)}, true
		}
		return Value{}, false
	}
	return Value{}, false
}

func (c *compiler) ident(n *ast.IdentifierNode) cnode {
	name := n.Value
	missing := c.evalErr(n, "field %q is missing", name)
	missing.Missing = true
	return cnode{field: name, missing: missing, eval: func(r *agent.Record) (Value, error) {
		v, ok := lookup(r, name)
		if !ok {
			return Value{}, missing
		}
		return v, nil
	}}
}

func isMissing(err error) bool {
	e, ok := err.(*EvalError)
	return ok && e.Missing
}

func (c *compiler) unary(n *ast.UnaryNode) (cnode, error) {
	x, err := c.compile(n.Node)
	if err != nil {
		return cnode{}, err
	}
	e := x.eval
	var out cnode
	switch n.Operator {
	case "!", "not":
		bad := c.evalErr(n, "operator %s needs true or false", n.Operator)
		out = cnode{typ: TypeBool, eval: func(r *agent.Record) (Value, error) {
			v, err := e(r)
			if err != nil {
				return Value{}, err
			}
			if v.Kind != agent.KindBool {
				return Value{}, bad
			}
			return boolV(v.Int == 0), nil
		}}
	case "-", "+":
		neg := n.Operator == "-"
		bad := c.evalErr(n, "operator %s needs a number", n.Operator)
		out = cnode{typ: TypeNumber, eval: func(r *agent.Record) (Value, error) {
			v, err := e(r)
			if err != nil {
				return Value{}, err
			}
			switch v.Kind {
			case agent.KindFloat:
				if neg {
					v.Float = -v.Float
				}
				return v, nil
			case agent.KindInt:
				if neg {
					v.Int = -v.Int
				}
				return v, nil
			}
			return Value{}, bad
		}}
	default:
		return cnode{}, &unsupportedError{"unary " + n.Operator}
	}
	return c.fold(n, out, x)
}

func (c *compiler) binary(n *ast.BinaryNode) (cnode, error) {
	switch n.Operator {
	case "in":
		return c.in(n)
	case "matches":
		return c.matches(n)
	}
	l, err := c.compile(n.Left)
	if err != nil {
		return cnode{}, err
	}
	r, err := c.compile(n.Right)
	if err != nil {
		return cnode{}, err
	}
	var out cnode
	switch n.Operator {
	case "&&", "and", "||", "or":
		out = c.logic(n, l, r)
	case "==", "!=":
		if l.konst && l.val.Kind == 0 {
			l, r = r, l
		}
		if r.konst && r.val.Kind == 0 {
			out = nilCheck(l, n.Operator == "==")
		} else {
			out = equality(l, r, n.Operator == "==")
		}
	case "<", ">", "<=", ">=":
		out = c.compare(n, l, r)
	case "+", "-", "*", "/", "%", "**", "^":
		out = c.arith(n, l, r)
	case "contains", "startsWith", "endsWith":
		out = c.stringTest(n, n.Operator, n.Operator, l, r)
	case "??":
		// Only a field itself may be missing: x ?? 0 is 0 when x is
		// missing, but (x + 1) ?? 0 fails then, as x + 1 does.
		le, re, bare := l.eval, r.eval, l.field != ""
		out = cnode{eval: func(rec *agent.Record) (Value, error) {
			v, err := le(rec)
			if err == nil && v.Kind != 0 {
				return v, nil
			}
			if err != nil && !(bare && isMissing(err)) {
				return Value{}, err
			}
			return re(rec)
		}}
		if l.typ == r.typ {
			out.typ = l.typ
		}
	default:
		return cnode{}, &unsupportedError{"operator " + n.Operator}
	}
	return c.fold(n, out, l, r)
}

func (c *compiler) logic(n *ast.BinaryNode, l, r cnode) cnode {
	le, re := l.eval, r.eval
	bad := c.evalErr(n, "operator %s needs true or false on both sides", n.Operator)
	if n.Operator == "&&" || n.Operator == "and" {
		return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
			a, err := le(rec)
			if err != nil {
				return Value{}, err
			}
			if a.Kind != agent.KindBool {
				return Value{}, bad
			}
			if a.Int == 0 {
				return a, nil
			}
			b, err := re(rec)
			if err != nil {
				return Value{}, err
			}
			if b.Kind != agent.KindBool {
				return Value{}, bad
			}
			return b, nil
		}}
	}
	return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		if a.Kind != agent.KindBool {
			return Value{}, bad
		}
		if a.Int != 0 {
			return a, nil
		}
		b, err := re(rec)
		if err != nil {
			return Value{}, err
		}
		if b.Kind != agent.KindBool {
			return Value{}, bad
		}
		return b, nil
	}}
}

// nilCheck compiles x == nil (eq) or x != nil: a missing field is nil. Only
// a field itself may be missing: (x + 1) == nil fails when x is missing, as
// x + 1 does.
func nilCheck(x cnode, eq bool) cnode {
	e, bare := x.eval, x.field != ""
	return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		v, err := e(rec)
		if err != nil {
			if bare && isMissing(err) {
				return boolV(eq), nil
			}
			return Value{}, err
		}
		return boolV((v.Kind == 0) == eq), nil
	}}
}

// equal compares two values as expr does: numbers by value across int and
// float, other kinds only with their own kind.
func equal(a, b Value) bool {
	if a.Kind == b.Kind {
		switch a.Kind {
		case agent.KindFloat:
			return a.Float == b.Float
		case agent.KindString:
			return a.Str == b.Str
		default:
			return a.Int == b.Int
		}
	}
	x, ok1 := number(a)
	y, ok2 := number(b)
	return ok1 && ok2 && x == y
}

func number(v Value) (float64, bool) {
	switch v.Kind {
	case agent.KindFloat:
		return v.Float, true
	case agent.KindInt:
		return float64(v.Int), true
	}
	return 0, false
}

func equality(l, r cnode, eq bool) cnode {
	le, re := l.eval, r.eval
	if r.konst {
		k := r.val
		return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
			a, err := le(rec)
			if err != nil {
				return Value{}, err
			}
			return boolV(equal(a, k) == eq), nil
		}}
	}
	return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		b, err := re(rec)
		if err != nil {
			return Value{}, err
		}
		return boolV(equal(a, b) == eq), nil
	}}
}

// Comparison operators, as codes the closures switch on.
const (
	opLT = iota
	opGT
	opLE
	opGE
)

func cmpFloat(op int, x, y float64) bool {
	switch op {
	case opLT:
		return x < y
	case opGT:
		return x > y
	case opLE:
		return x <= y
	}
	return x >= y
}

// order compares a and b; ok is false when they are not both numbers or both strings.
func order(op int, a, b Value) (res, ok bool) {
	if a.Kind == agent.KindInt && b.Kind == agent.KindInt {
		switch op {
		case opLT:
			return a.Int < b.Int, true
		case opGT:
			return a.Int > b.Int, true
		case opLE:
			return a.Int <= b.Int, true
		}
		return a.Int >= b.Int, true
	}
	if a.Kind == agent.KindString && b.Kind == agent.KindString {
		c := strings.Compare(a.Str, b.Str)
		return cmpFloat(op, float64(c), 0), true
	}
	x, ok1 := number(a)
	y, ok2 := number(b)
	if !ok1 || !ok2 {
		return false, false
	}
	return cmpFloat(op, x, y), true
}

func (c *compiler) compare(n *ast.BinaryNode, l, r cnode) cnode {
	op := map[string]int{"<": opLT, ">": opGT, "<=": opLE, ">=": opGE}[n.Operator]
	bad := c.evalErr(n, "operator %s needs two numbers or two strings", n.Operator)
	le, re := l.eval, r.eval
	if r.konst && r.val.Kind == agent.KindFloat || r.konst && r.val.Kind == agent.KindInt {
		k := r.val
		kf, _ := number(k)
		if name := l.field; name != "" {
			missing := l.missing
			return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
				a, ok := lookup(rec, name)
				if !ok {
					return Value{}, missing
				}
				if a.Kind == agent.KindFloat {
					return boolV(cmpFloat(op, a.Float, kf)), nil
				}
				res, ok := order(op, a, k)
				if !ok {
					return Value{}, bad
				}
				return boolV(res), nil
			}}
		}
		return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
			a, err := le(rec)
			if err != nil {
				return Value{}, err
			}
			if a.Kind == agent.KindFloat {
				return boolV(cmpFloat(op, a.Float, kf)), nil
			}
			res, ok := order(op, a, k)
			if !ok {
				return Value{}, bad
			}
			return boolV(res), nil
		}}
	}
	return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		b, err := re(rec)
		if err != nil {
			return Value{}, err
		}
		res, ok := order(op, a, b)
		if !ok {
			return Value{}, bad
		}
		return boolV(res), nil
	}}
}

// Arithmetic operators, as codes the closures switch on.
const (
	opAdd = iota
	opSub
	opMul
	opDiv
	opMod
	opPow
)

func arithFloat(op int, x, y float64) float64 {
	switch op {
	case opAdd:
		return x + y
	case opSub:
		return x - y
	case opMul:
		return x * y
	case opDiv:
		return x / y
	case opMod:
		return math.Mod(x, y)
	}
	return math.Pow(x, y)
}

// arith applies op; ok is false when the operands do not fit it, errDiv is set
// for an integer modulo by zero.
func arith(op int, a, b Value) (v Value, ok, divZero bool) {
	if a.Kind == agent.KindInt && b.Kind == agent.KindInt {
		switch op {
		case opAdd:
			return intV(a.Int + b.Int), true, false
		case opSub:
			return intV(a.Int - b.Int), true, false
		case opMul:
			return intV(a.Int * b.Int), true, false
		case opMod:
			if b.Int == 0 {
				return Value{}, false, true
			}
			if b.Int == -1 {
				return intV(0), true, false
			}
			return intV(a.Int % b.Int), true, false
		}
	}
	if op == opAdd && a.Kind == agent.KindString && b.Kind == agent.KindString {
		return Value{Kind: agent.KindString, Str: a.Str + b.Str}, true, false
	}
	x, ok1 := number(a)
	y, ok2 := number(b)
	if !ok1 || !ok2 {
		return Value{}, false, false
	}
	return floatV(arithFloat(op, x, y)), true, false
}

func (c *compiler) arith(n *ast.BinaryNode, l, r cnode) cnode {
	op := map[string]int{"+": opAdd, "-": opSub, "*": opMul, "/": opDiv, "%": opMod, "**": opPow, "^": opPow}[n.Operator]
	bad := c.evalErr(n, "operator %s needs two numbers", n.Operator)
	if op == opAdd {
		bad = c.evalErr(n, "operator + needs two numbers or two strings")
	}
	divZero := c.evalErr(n, "integer modulo by zero")
	typ := TypeNumber
	if op == opAdd && (l.typ != TypeNumber || r.typ != TypeNumber) {
		typ = TypeUnknown
		if l.typ == TypeString && r.typ == TypeString {
			typ = TypeString
		}
	}
	le, re := l.eval, r.eval
	slow := func(a, b Value) (Value, error) {
		v, ok, dz := arith(op, a, b)
		if dz {
			return Value{}, divZero
		}
		if !ok {
			return Value{}, bad
		}
		return v, nil
	}
	if r.konst && (r.val.Kind == agent.KindFloat || r.val.Kind == agent.KindInt) {
		// A float operand with a numeric constant: float arithmetic, whatever
		// the constant is written as (temp * 1.8 + 32).
		k := r.val
		kf, _ := number(k)
		if name := l.field; name != "" {
			missing := l.missing
			return cnode{typ: typ, eval: func(rec *agent.Record) (Value, error) {
				a, ok := lookup(rec, name)
				if !ok {
					return Value{}, missing
				}
				if a.Kind == agent.KindFloat {
					return floatV(arithFloat(op, a.Float, kf)), nil
				}
				return slow(a, k)
			}}
		}
		return cnode{typ: typ, eval: func(rec *agent.Record) (Value, error) {
			a, err := le(rec)
			if err != nil {
				return Value{}, err
			}
			if a.Kind == agent.KindFloat {
				return floatV(arithFloat(op, a.Float, kf)), nil
			}
			return slow(a, k)
		}}
	}
	if r.konst {
		k := r.val
		return cnode{typ: typ, eval: func(rec *agent.Record) (Value, error) {
			a, err := le(rec)
			if err != nil {
				return Value{}, err
			}
			return slow(a, k)
		}}
	}
	return cnode{typ: typ, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		b, err := re(rec)
		if err != nil {
			return Value{}, err
		}
		if a.Kind == agent.KindFloat && b.Kind == agent.KindFloat {
			return floatV(arithFloat(op, a.Float, b.Float)), nil
		}
		return slow(a, b)
	}}
}

// stringTest compiles contains, startsWith and endsWith (op), as operators
// or as the builtins hasPrefix and hasSuffix (name). The operators are false
// when a side is nil, as in expr; the builtins need two strings.
func (c *compiler) stringTest(n ast.Node, op, name string, l, r cnode) cnode {
	var test func(s, sub string) bool
	switch op {
	case "contains":
		test = strings.Contains
	case "startsWith":
		test = strings.HasPrefix
	default:
		test = strings.HasSuffix
	}
	nilFalse := op == name
	bad := c.evalErr(n, "operator %s needs two strings", op)
	if !nilFalse {
		bad = c.evalErr(n, "%s needs two strings", name)
	}
	le, re := l.eval, r.eval
	return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		b, err := re(rec)
		if err != nil {
			return Value{}, err
		}
		if a.Kind != agent.KindString || b.Kind != agent.KindString {
			if nilFalse && (a.Kind == 0 || b.Kind == 0) {
				return boolV(false), nil
			}
			return Value{}, bad
		}
		return boolV(test(a.Str, b.Str)), nil
	}}
}

// in compiles x in [literal, ...]; other right-hand sides fall back.
func (c *compiler) in(n *ast.BinaryNode) (cnode, error) {
	arr, ok := n.Right.(*ast.ArrayNode)
	if !ok {
		return cnode{}, &unsupportedError{"in without a literal list"}
	}
	l, err := c.compile(n.Left)
	if err != nil {
		return cnode{}, err
	}
	var set []Value
	strs := map[string]struct{}{}
	allStrings := true
	for _, e := range arr.Nodes {
		k, err := c.compile(e)
		if err != nil {
			return cnode{}, err
		}
		if !k.konst {
			return cnode{}, &unsupportedError{"in with a non-constant list"}
		}
		set = append(set, k.val)
		if k.val.Kind == agent.KindString {
			strs[k.val.Str] = struct{}{}
		} else {
			allStrings = false
		}
	}
	le := l.eval
	if allStrings {
		out := cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
			a, err := le(rec)
			if err != nil {
				return Value{}, err
			}
			if a.Kind != agent.KindString {
				return boolV(false), nil
			}
			_, ok := strs[a.Str]
			return boolV(ok), nil
		}}
		return c.fold(n, out, l)
	}
	out := cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		for _, k := range set {
			if equal(a, k) {
				return boolV(true), nil
			}
		}
		return boolV(false), nil
	}}
	return c.fold(n, out, l)
}

// matches compiles x matches "constant regexp"; the pattern is compiled once.
func (c *compiler) matches(n *ast.BinaryNode) (cnode, error) {
	l, err := c.compile(n.Left)
	if err != nil {
		return cnode{}, err
	}
	r, err := c.compile(n.Right)
	if err != nil {
		return cnode{}, err
	}
	if !r.konst || r.val.Kind != agent.KindString {
		return cnode{}, &unsupportedError{"matches with a non-constant pattern"}
	}
	re, err := regexp.Compile(r.val.Str)
	if err != nil {
		return cnode{}, c.errorAt(n.Right, "bad regular expression: %v", err)
	}
	bad := c.evalErr(n, "operator matches needs a string")
	le := l.eval
	return cnode{typ: TypeBool, eval: func(rec *agent.Record) (Value, error) {
		a, err := le(rec)
		if err != nil {
			return Value{}, err
		}
		if a.Kind != agent.KindString {
			if a.Kind == 0 {
				return boolV(false), nil // nil matches nothing, as in expr
			}
			return Value{}, bad
		}
		return boolV(re.MatchString(a.Str)), nil
	}}, nil
}

func (c *compiler) conditional(n *ast.ConditionalNode) (cnode, error) {
	cond, err := c.compile(n.Cond)
	if err != nil {
		return cnode{}, err
	}
	a, err := c.compile(n.Exp1)
	if err != nil {
		return cnode{}, err
	}
	b, err := c.compile(n.Exp2)
	if err != nil {
		return cnode{}, err
	}
	ce, ae, be := cond.eval, a.eval, b.eval
	bad := c.evalErr(n, "condition is not true or false")
	out := cnode{eval: func(rec *agent.Record) (Value, error) {
		v, err := ce(rec)
		if err != nil {
			return Value{}, err
		}
		if v.Kind != agent.KindBool {
			return Value{}, bad
		}
		if v.Int != 0 {
			return ae(rec)
		}
		return be(rec)
	}}
	if a.typ == b.typ {
		out.typ = a.typ
	}
	return c.fold(n, out, cond, a, b)
}
