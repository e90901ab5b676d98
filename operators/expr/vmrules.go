package expr

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm/runtime"

	"github.com/pspf/pspf-edge/agent"
)

// The rules of the closures, kept on expr's virtual machine. Where expr's
// own rules are looser or depend on the processor, the fallback's tree is
// rewritten to call these functions; the differential fuzz test
// (FuzzClosuresAgreeWithVM) holds the two ways to each other, and the
// README lists where the language differs from expr's.

// The functions the rewritten tree calls. Their names cannot be written in
// an expression, so they are never taken for a builtin or a field.
const (
	readField  = "$pspf.field"  // a field; fails when the record lacks it
	needBool   = "$pspf.bool"   // an operand of && || ! or a condition; fails unless a bool
	needNumber = "$pspf.number" // the operand of unary +; fails unless a number
	intArg     = "$pspf.intarg" // the argument of int(); fails for a float out of int64's range
	absResult  = "$pspf.abs"    // the result of abs(); -0 becomes 0
	add        = "$pspf.add"    // x + y
	subtract   = "$pspf.sub"    // x - y
	multiply   = "$pspf.mul"    // x * y
	modulo     = "$pspf.mod"    // x % y, on floats too
	negate     = "$pspf.neg"    // -x
)

var (
	errNeedBool   = errors.New("operators &&, || and ! and conditions need true or false")
	errNeedNumber = errors.New("operator + needs a number")
	errIntRange   = errors.New("int needs a number within the range of a 64-bit integer")
	errModZero    = errors.New("integer modulo by zero")
	errModTypes   = errors.New("operator % needs two numbers")
)

// missingFieldError is what readField fails with; the machine wraps it.
type missingFieldError struct{ name string }

func (e *missingFieldError) Error() string { return fmt.Sprintf("field %q is missing", e.name) }

// beyondVMInt ends the error for an integer the machine cannot hold: its
// integers are Go's int, 32 bits on armv6 and armv7.
var beyondVMInt = fmt.Sprintf("is beyond the %d-bit integers expr's virtual machine computes with on this processor", strconv.IntSize)

var funcType = reflect.TypeOf(func(...any) (any, error) { return nil, nil })

// functions returns the functions the rewritten tree calls, bound to fb.
func (fb *fallback) functions() map[string]func(...any) (any, error) {
	arithFn := func(op int, name string, machine func(a, b any) any) func(...any) (any, error) {
		return func(args ...any) (any, error) {
			x, xok := vmNumber(args[0])
			y, yok := vmNumber(args[1])
			if !xok || !yok {
				// Strings, dates, durations and wrong types: the
				// machine's own rules (it panics on a wrong type, and
				// Run turns that into an error).
				return machine(args[0], args[1]), nil
			}
			v, _, _ := arith(op, x, y)
			return toVM(v, name)
		}
	}
	return map[string]func(...any) (any, error){
		readField: func(args ...any) (any, error) {
			name, _ := args[0].(string)
			v, ok := fb.env[name]
			if !ok {
				return nil, &missingFieldError{name: name}
			}
			return v, nil
		},
		needBool: func(args ...any) (any, error) {
			if _, ok := args[0].(bool); !ok {
				return nil, errNeedBool
			}
			return args[0], nil
		},
		needNumber: func(args ...any) (any, error) {
			if _, ok := vmNumber(args[0]); !ok {
				return nil, errNeedNumber
			}
			return args[0], nil
		},
		intArg: func(args ...any) (any, error) {
			f, ok := args[0].(float64)
			switch {
			case ok && !inIntRange(f):
				return nil, errIntRange
			case ok && float64(int(f)) != math.Trunc(f):
				return nil, fmt.Errorf("int(%v) %s", f, beyondVMInt)
			}
			return args[0], nil
		},
		absResult: func(args ...any) (any, error) {
			switch v := args[0].(type) {
			case float64:
				if v == 0 {
					return 0.0, nil
				}
			case int:
				if v < 0 && strconv.IntSize == 32 {
					return nil, fmt.Errorf("abs(%d) %s", v, beyondVMInt)
				}
			}
			return args[0], nil
		},
		add:      arithFn(opAdd, "+", runtime.Add),
		subtract: arithFn(opSub, "-", runtime.Subtract),
		multiply: arithFn(opMul, "*", runtime.Multiply),
		modulo: func(args ...any) (any, error) {
			v, ok, divZero := arith(opMod, fromAnyOrNil(args[0]), fromAnyOrNil(args[1]))
			switch {
			case divZero:
				return nil, errModZero
			case !ok:
				return nil, errModTypes
			}
			return toVM(v, "%")
		},
		negate: func(args ...any) (any, error) {
			x, ok := vmNumber(args[0])
			if !ok {
				return runtime.Negate(args[0]), nil
			}
			if x.Kind == agent.KindInt {
				return toVM(intV(-x.Int), "-")
			}
			return -x.Float, nil
		},
	}
}

// vmNumber returns v as a Value if it is a number of the machine.
func vmNumber(v any) (Value, bool) {
	switch v := v.(type) {
	case int:
		return intV(int64(v)), true
	case float64:
		return floatV(v), true
	}
	return Value{}, false
}

// toVM returns a number the closures computed as one of the machine,
// failing for an integer its int cannot hold.
func toVM(v Value, op string) (any, error) {
	if v.Kind != agent.KindInt {
		return v.Float, nil
	}
	if int64(int(v.Int)) != v.Int {
		return nil, fmt.Errorf("operator %s: %d %s", op, v.Int, beyondVMInt)
	}
	return int(v.Int), nil
}

// rewrite makes the checked tree keep the rules of the closures where the
// machine is looser or depends on the processor:
//   - a field is read through readField, so that a missing one fails (the
//     machine reads nil), except where it is tested for nil: x == nil,
//     x != nil, x ?? y;
//   - the operands of && || ! and the condition of c ? a : b go through
//     needBool (the machine returns the right side of && and || unchecked:
//     true && 5 would be 5, and its optimiser makes x && true into x and
//     x && false into false);
//   - the operand of unary + goes through needNumber (the machine returns
//     it unchecked: +"a" would be "a");
//   - the argument of int() goes through intArg (the machine converts NaN,
//     the infinities and floats beyond int64 to whatever the processor
//     makes of them);
//   - the result of abs() goes through absResult (the machine's abs(-0) is
//     -0);
//   - x + y, x - y, x * y, x % y and -x are calls that compute numbers as
//     the closures do: % takes floats (math.Mod; the machine's takes only
//     integers), and integers are 64-bit (the machine's are 32-bit on armv6
//     and armv7, where a result beyond that is an error, not a wrapped
//     number). Literals alone stay, for the optimiser to fold (and refuse
//     1 % 0);
//   - x in ["a", "b"] and x in [1, 2] keep their lists (the optimiser
//     would make them a map[string]struct{} or a map[int]struct{}, whose
//     look-up fails for an x of another type where the list says false).
//
// The tree stays as the checker typed it, except that a call is of unknown
// type: the machine then uses its generic instructions around it (its
// OpEqualInt would fail on a float that % of two floats gives where the
// checker expected an int).
func rewrite(tree *parser.Tree, bound map[string]bool) {
	call := func(fn string, old ast.Node, args ...ast.Node) *ast.CallNode {
		callee := &ast.IdentifierNode{Value: fn}
		callee.SetType(funcType)
		c := &ast.CallNode{Callee: callee, Arguments: args}
		c.SetLocation(old.Location())
		return c
	}
	nilTested := map[*ast.IdentifierNode]bool{}
	ast.Walk(&tree.Node, visitFunc(func(n *ast.Node) {
		b, ok := (*n).(*ast.BinaryNode)
		if !ok {
			return
		}
		switch b.Operator {
		case "==", "!=":
			l, lok := b.Left.(*ast.IdentifierNode)
			r, rok := b.Right.(*ast.IdentifierNode)
			if _, isNil := b.Right.(*ast.NilNode); isNil && lok {
				nilTested[l] = true
			}
			if _, isNil := b.Left.(*ast.NilNode); isNil && rok {
				nilTested[r] = true
			}
		case "??":
			if l, ok := b.Left.(*ast.IdentifierNode); ok {
				nilTested[l] = true
			}
		}
	}))
	arithFns := map[string]string{"+": add, "-": subtract, "*": multiply, "%": modulo}
	ast.Walk(&tree.Node, visitFunc(func(n *ast.Node) {
		switch x := (*n).(type) {
		case *ast.IdentifierNode:
			if x.Value != "$env" && !bound[x.Value] && !nilTested[x] {
				*n = call(readField, x, &ast.StringNode{Value: x.Value})
			}
		case *ast.BinaryNode:
			switch x.Operator {
			case "+", "-", "*", "%":
				if !isLiteral(x.Left) || !isLiteral(x.Right) {
					*n = call(arithFns[x.Operator], x, x.Left, x.Right)
				}
			case "&&", "and", "||", "or":
				x.Left = call(needBool, x.Left, x.Left)
				x.Right = call(needBool, x.Right, x.Right)
			case "in":
				keepList(x)
			}
		case *ast.ConditionalNode:
			x.Cond = call(needBool, x.Cond, x.Cond)
		case *ast.UnaryNode:
			switch x.Operator {
			case "+":
				x.Node = call(needNumber, x.Node, x.Node)
			case "-":
				if !isLiteral(x.Node) {
					*n = call(negate, x, x.Node)
				}
			case "!", "not":
				x.Node = call(needBool, x.Node, x.Node)
			}
		case *ast.BuiltinNode:
			switch {
			case x.Name == "int" && len(x.Arguments) == 1:
				x.Arguments[0] = call(intArg, x.Arguments[0], x.Arguments[0])
			case x.Name == "abs":
				*n = call(absResult, x, x)
			}
		}
	}))
}

// isLiteral reports whether n is a number or string literal.
func isLiteral(n ast.Node) bool {
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.StringNode:
		return true
	}
	return false
}

// keepList makes the list of x in [literal, ...] a constant list, which the
// optimiser leaves as it is, compared element by element.
func keepList(b *ast.BinaryNode) {
	arr, ok := b.Right.(*ast.ArrayNode)
	if !ok || len(arr.Nodes) == 0 {
		return
	}
	list := make([]any, len(arr.Nodes))
	for i, e := range arr.Nodes {
		switch e := e.(type) {
		case *ast.StringNode:
			list[i] = e.Value
		case *ast.IntegerNode:
			list[i] = e.Value
		default:
			return
		}
	}
	k := &ast.ConstantNode{Value: list}
	k.SetType(reflect.TypeOf(list))
	ast.Patch(&b.Right, k)
}
