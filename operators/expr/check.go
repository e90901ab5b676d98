package expr

import (
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
)

// checkCalls reports the first call of something that is not a builtin:
// an unknown function (nosuchfunc(temp)) or a method of a field
// (temp.round()). The parser turns every builtin call into a BuiltinNode, and
// no other functions are given to it, so any CallNode left is one of these.
func checkCalls(src string, root ast.Node) error {
	var bad error
	ast.Walk(&root, visitFunc(func(n *ast.Node) {
		call, ok := (*n).(*ast.CallNode)
		if !ok || bad != nil {
			return
		}
		line, col := position(src, call.Callee.Location().From)
		switch c := call.Callee.(type) {
		case *ast.IdentifierNode:
			msg := fmt.Sprintf("unknown function %s", c.Value)
			if s := closestBuiltin(c.Value); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			bad = &CompileError{Line: line, Column: col, Msg: msg}
		case *ast.MemberNode:
			name := "a method"
			if s, ok := c.Property.(*ast.StringNode); ok {
				name = s.Value
			}
			bad = &CompileError{Line: line, Column: col, Msg: fmt.Sprintf("unknown function %s: field values (numbers, strings, booleans) have no methods; call a builtin with the value, like round(temp)", name)}
		default:
			bad = &CompileError{Line: line, Column: col, Msg: "only builtin functions can be called"}
		}
	}))
	return bad
}

// closestBuiltin returns the builtin whose name is nearest to name, within two
// edits, or "".
func closestBuiltin(name string) string {
	best, bestD := "", 3
	for _, f := range builtin.Builtins {
		if d := editDistance(name, f.Name); d < bestD || d == bestD && f.Name < best {
			best, bestD = f.Name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var durationType = reflect.TypeOf(time.Duration(0))

// resultType turns the type the checker found for the whole expression into
// a Type, and refuses the results that no record field can hold: a list, a
// map, a date, a duration. Those are known before any record arrives, and
// would otherwise fail on every one.
func resultType(t reflect.Type) (Type, error) {
	if t == nil {
		return TypeUnknown, nil
	}
	what := ""
	switch {
	case t == durationType:
		what = "a duration"
	case t.Kind() == reflect.Bool:
		return TypeBool, nil
	case t.Kind() == reflect.String:
		return TypeString, nil
	case slices.Contains([]reflect.Kind{reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64}, t.Kind()):
		return TypeNumber, nil
	case t.Kind() == reflect.Interface:
		return TypeUnknown, nil
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		what = "a list"
	case t.Kind() == reflect.Map:
		what = "a map"
	case t.Kind() == reflect.Struct:
		what = "a " + t.String() // time.Time: a date
		if t == reflect.TypeOf(time.Time{}) {
			what = "a date"
		}
	default:
		what = "a " + t.Kind().String()
	}
	return TypeUnknown, &CompileError{Line: 1, Column: 1, Msg: fmt.Sprintf("result is %s; it must be a number, a string or true or false", what)}
}
