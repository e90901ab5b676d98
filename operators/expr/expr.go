// Package expr compiles the expressions of the filter and map operators.
//
// Expressions are written in the language of github.com/expr-lang/expr and are
// parsed and checked by that library. Field names are identifiers; a nested
// name like `gps.lat` (what the JSON and msgpack decoders make of nested
// objects) is written as is, and a name that is not an identifier as
// `$env["odd name"]`.
//
// The checked tree is then compiled into Go closures over *agent.Record for a
// subset of the language that covers what edge pipelines need:
//
//   - literals (numbers, strings, true, false, nil) and field names;
//   - + - * / % ** on numbers, + on strings, unary - and +;
//   - == != < > <= >= on numbers and strings, == != on bools;
//   - && || ! and, or, not; the conditional c ? a : b (and if/else);
//   - x in [literal, ...], contains, startsWith, endsWith, matches "regexp";
//   - x == nil, x != nil (is the field present) and x ?? fallback;
//   - the builtins abs, ceil, floor, round, min, max, int, float, len,
//     lower, upper, trim, hasPrefix, hasSuffix.
//
// This subset evaluates without allocating (except where it makes a new
// string). Anything else is run by expr's virtual machine with an environment
// reused across records; that is slower and allocates, but behaves the same:
// its tree is rewritten to keep the rules of the closures where expr's are
// looser (a missing field, the operands of && and ||, % on floats, integers
// on 32-bit processors; see vmrules.go and the README), and a differential
// fuzz test (FuzzClosuresAgreeWithVM) holds the two ways to each other.
//
// Compile refuses what would fail on every record, so that a config with it
// never loads (nor replaces a running one on reload): a syntax error, a call
// of an unknown function or of a method on a field (records hold numbers,
// strings and booleans, nothing callable), a builtin with the wrong number or
// types of arguments, an operation on constants of the wrong types, and a
// result no field can hold (a list, a map, a date, a duration). Field names
// cannot be checked: which fields a record has is known only when it comes.
//
// At run time a missing field or an operand of the wrong type is an error, an
// *EvalError, never a panic.
package expr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/types"

	"github.com/pspf/pspf-edge/agent"
)

// Value is the result of an expression: a number, a string or a bool. The
// zero Value is nil (what a fallback expression may return).
type Value struct {
	// Kind is KindFloat, KindInt, KindString or KindBool; 0 for nil.
	Kind agent.Kind
	// Float holds a KindFloat value.
	Float float64
	// Int holds a KindInt value, and a KindBool value as 0 or 1.
	Int int64
	// Str holds a KindString value.
	Str string
}

// Field returns the value as a record field with the given name.
func (v Value) Field(name string) agent.Field {
	return agent.Field{Name: name, Kind: v.Kind, Float: v.Float, Int: v.Int, Str: v.Str}
}

// AppendText appends the value as text, as agent.Field.AppendText does.
func (v Value) AppendText(dst []byte) []byte {
	f := v.Field("")
	return f.AppendText(dst)
}

// String returns the value as text, for messages and tests.
func (v Value) String() string {
	switch v.Kind {
	case 0:
		return "nil"
	case agent.KindString:
		return strconv.Quote(v.Str)
	}
	return string(v.AppendText(nil))
}

// Type is what an expression is known to return before it runs.
type Type uint8

// The static types of an expression. TypeUnknown is an expression whose type
// depends on the record, like a bare field name.
const (
	TypeUnknown Type = iota
	TypeBool
	TypeNumber
	TypeString
	TypeNil
)

// String returns the type's name for messages.
func (t Type) String() string {
	switch t {
	case TypeBool:
		return "bool"
	case TypeNumber:
		return "number"
	case TypeString:
		return "string"
	case TypeNil:
		return "nil"
	}
	return "unknown"
}

// CompileError is an expression that cannot be compiled: a syntax error, an
// unknown function, a type error the checker finds, a result no field can
// hold, or a constant part that fails (1 % 0).
type CompileError struct {
	// Line is the 1-based line in the expression (most are one line).
	Line int
	// Column is the 1-based column, in characters, of the problem.
	Column int
	// Msg says what is wrong.
	Msg string
}

func (e *CompileError) Error() string {
	if e.Line > 1 {
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("column %d: %s", e.Column, e.Msg)
}

// EvalError is an expression that failed on one record: a missing field, an
// operand of the wrong type, a division of integers by zero. The errors of the
// compiled subset are made at compile time, so failing costs no allocation.
type EvalError struct {
	// Column is the 1-based column of the part of the expression that failed.
	Column int
	// Msg says what went wrong.
	Msg string
	// Missing is set when the cause is a missing field.
	Missing bool
}

func (e *EvalError) Error() string {
	return fmt.Sprintf("column %d: %s", e.Column, e.Msg)
}

// Program is a compiled expression. It keeps scratch state for the fallback
// virtual machine, so it is not safe for concurrent use: each operator
// instance compiles its own.
type Program struct {
	src     string
	eval    evalFn
	typ     Type
	notBool *EvalError
	vm      *fallback // nil when compiled to closures
}

// Compile parses, checks and compiles an expression. The error is a
// *CompileError with the column of the problem.
func Compile(src string) (*Program, error) { return compile(src, false) }

// compile is Compile; with vmOnly, the expression runs on expr's virtual
// machine even where the closures would do (the reference the differential
// fuzz test holds the closures to).
func compile(src string, vmOnly bool) (*Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &CompileError{Line: 1, Column: 1, Msg: "expression is empty"}
	}
	cfg := conf.CreateNew()
	tree, err := parser.ParseWithConfig(src, cfg)
	if err != nil {
		return nil, compileError(src, err)
	}
	// A call that is not a builtin can never succeed: records hold no
	// functions. The checker takes such a name for a field of unknown type
	// and lets it through, and every record would then fail at run time.
	if err := checkCalls(src, tree.Node); err != nil {
		return nil, err
	}
	// Every bare name is a field, except the names that let binds.
	// Declaring fields as variables of unknown type keeps the checker from
	// taking a field called count or max for the builtin of that name.
	ast.Walk(&tree.Node, dottedNames{})
	bound := map[string]bool{}
	ast.Walk(&tree.Node, visitFunc(func(n *ast.Node) {
		if v, ok := (*n).(*ast.VariableDeclaratorNode); ok {
			bound[v.Name] = true
		}
	}))
	env := types.Map{}
	ast.Walk(&tree.Node, visitFunc(func(n *ast.Node) {
		if id, ok := (*n).(*ast.IdentifierNode); ok && id.Value != "$env" && !bound[id.Value] {
			env[id.Value] = types.Any
		}
	}))
	cfg.WithEnv(env)
	cfg.Strict = false
	rt, err := checker.Check(tree, cfg)
	if err != nil {
		return nil, compileError(src, err)
	}
	typ, err := resultType(rt)
	if err != nil {
		return nil, err
	}
	p := &Program{src: src, typ: typ, notBool: &EvalError{Column: 1, Msg: "result is not true or false"}}
	c := &compiler{src: src}
	n, err := cnode{}, error(&unsupportedError{"vmOnly"})
	if !vmOnly {
		n, err = c.compile(tree.Node)
	}
	var unsup *unsupportedError
	switch {
	case err == nil:
		p.eval = n.eval
		if n.typ != TypeUnknown {
			p.typ = n.typ
		}
		return p, nil
	case !errors.As(err, &unsup):
		return nil, err
	}
	fb, err := newFallback(src, tree, cfg, bound)
	if err != nil {
		return nil, compileError(src, err)
	}
	p.vm = fb
	p.eval = fb.eval
	return p, nil
}

// MustCompile is Compile for expressions known to be valid, as in tests; it
// panics on an error.
func MustCompile(src string) *Program {
	p, err := Compile(src)
	if err != nil {
		panic("expr: " + err.Error())
	}
	return p
}

// Source returns the expression as written.
func (p *Program) Source() string { return p.src }

// Type returns what the expression is known to return before it runs.
func (p *Program) Type() Type { return p.typ }

// Compiled reports whether the expression was compiled to closures (true) or
// runs on expr's virtual machine (false).
func (p *Program) Compiled() bool { return p.vm == nil }

// Eval evaluates the expression on r. The error, if any, is an *EvalError.
func (p *Program) Eval(r *agent.Record) (Value, error) { return p.eval(r) }

// EvalBool evaluates a condition on r: a result other than true or false is
// an error.
func (p *Program) EvalBool(r *agent.Record) (bool, error) {
	v, err := p.eval(r)
	if err != nil {
		return false, err
	}
	if v.Kind != agent.KindBool {
		return false, p.notBool
	}
	return v.Int != 0, nil
}

// compileError turns an error of the expr library into a *CompileError.
func compileError(src string, err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		line, col := position(src, fe.From)
		return &CompileError{Line: line, Column: col, Msg: fe.Message}
	}
	return &CompileError{Line: 1, Column: 1, Msg: err.Error()}
}

// position returns the 1-based line and column of the rune at offset from.
func position(src string, from int) (line, col int) {
	line, col = 1, 1
	i := 0
	for _, r := range src {
		if i == from {
			break
		}
		if r == '\n' {
			line++
			col = 1
		} else {
			col++
		}
		i++
	}
	return line, col
}

// dottedNames rewrites member access on identifiers into dotted field names:
// gps.lat becomes the field "gps.lat", $env["a b"] the field "a b".
type dottedNames struct{}

// Visit implements ast.Visitor. Walk visits children first, so a.b.c is
// rewritten from the inside out.
func (dottedNames) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok || m.Method {
		return
	}
	prop, ok := m.Property.(*ast.StringNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok {
		return
	}
	name := id.Value + "." + prop.Value
	if id.Value == "$env" {
		name = prop.Value
	}
	ast.Patch(node, &ast.IdentifierNode{Value: name})
}
