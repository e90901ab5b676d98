package expr

import (
	"errors"
	"fmt"
	"math"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	exprcompiler "github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/pspf/pspf-edge/agent"
)

// fallback runs an expression outside the compiled subset on expr's virtual
// machine. The environment map and the machine are reused across records;
// only the fields the expression names are put in the environment.
//
// The tree is rewritten first so that the machine keeps the rules of the
// closures where expr's own are looser (see rewrite); the differential fuzz
// test holds the two to each other.
type fallback struct {
	src   string
	prog  *vm.Program
	vm    vm.VM
	names []string
	env   map[string]any
}

func newFallback(src string, tree *parser.Tree, cfg *conf.Config, bound map[string]bool) (*fallback, error) {
	fb := &fallback{src: src, env: map[string]any{}}
	seen := map[string]bool{}
	ast.Walk(&tree.Node, visitFunc(func(n *ast.Node) {
		if id, ok := (*n).(*ast.IdentifierNode); ok && id.Value != "$env" && !bound[id.Value] && !seen[id.Value] {
			seen[id.Value] = true
			fb.names = append(fb.names, id.Value)
		}
	}))
	rewrite(tree, bound)
	for name, fn := range fb.functions() {
		cfg.Functions[name] = &builtin.Function{Name: name, Func: fn}
	}
	if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
		return nil, err
	}
	prog, err := exprcompiler.Compile(tree, cfg)
	if err != nil {
		return nil, err
	}
	fb.prog = prog
	return fb, nil
}

type visitFunc func(*ast.Node)

func (f visitFunc) Visit(n *ast.Node) { f(n) }

func (fb *fallback) eval(r *agent.Record) (Value, error) {
	for _, name := range fb.names {
		f := r.Field(name)
		if f == nil {
			delete(fb.env, name)
			continue
		}
		switch f.Kind {
		case agent.KindFloat:
			fb.env[name] = f.Float
		case agent.KindInt:
			if int64(int(f.Int)) != f.Int {
				// expr's machine computes in int: 32 bits on armv6 and
				// armv7. A value it would cut is an error, not a wrong
				// result.
				return Value{}, &EvalError{Column: 1, Msg: fmt.Sprintf("field %q: %d %s", name, f.Int, beyondVMInt)}
			}
			fb.env[name] = int(f.Int)
		case agent.KindBool:
			fb.env[name] = f.Int != 0
		case agent.KindString:
			fb.env[name] = f.Str
		case agent.KindBytes:
			fb.env[name] = string(f.Bytes)
		}
	}
	out, err := fb.vm.Run(fb.prog, fb.env)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			_, col := position(fb.src, fe.From)
			var mf *missingFieldError
			return Value{}, &EvalError{Column: col, Msg: fe.Message, Missing: errors.As(err, &mf)}
		}
		return Value{}, &EvalError{Column: 1, Msg: err.Error()}
	}
	return fromAny(out)
}

// fromAnyOrNil is fromAny for a value known to be one the machine makes;
// anything else is nil.
func fromAnyOrNil(v any) Value {
	out, _ := fromAny(v)
	return out
}

// fromAny converts a result of the virtual machine into a Value.
func fromAny(v any) (Value, error) {
	switch v := v.(type) {
	case nil:
		return Value{}, nil
	case bool:
		return boolV(v), nil
	case float64:
		return floatV(v), nil
	case float32:
		return floatV(float64(v)), nil
	case int:
		return intV(int64(v)), nil
	case int64:
		return intV(v), nil
	case int32:
		return intV(int64(v)), nil
	case uint64:
		if v > math.MaxInt64 {
			return floatV(float64(v)), nil
		}
		return intV(int64(v)), nil
	case string:
		return Value{Kind: agent.KindString, Str: v}, nil
	case []byte:
		return Value{Kind: agent.KindString, Str: string(v)}, nil
	}
	return Value{}, &EvalError{Column: 1, Msg: fmt.Sprintf("result of type %T is not a number, string or bool", v)}
}
