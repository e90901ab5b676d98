package expr

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	exprlib "github.com/expr-lang/expr"

	"github.com/pspf/pspf-edge/agent"
)

// The differential test: every expression the generator makes is compiled
// twice, to closures (Compile) and to expr's virtual machine alone
// (compile(src, true)), and both must give the same value or fail the same
// way on every generated record. Where no field the expression names is
// missing, expr's public API (expr.Compile, expr.Run on a map) must agree as
// well, so the reference is not only the package's own use of the machine.

// genFields are the field names expressions are made of; gen.record gives
// each a kind and a value, or leaves it out.
var genFields = []string{"a", "b", "c", "d", "g.x", `$env["odd name"]`}

// fieldName is the record field a genFields entry reads.
func fieldName(src string) string {
	if rest, ok := strings.CutPrefix(src, `$env["`); ok {
		return strings.TrimSuffix(rest, `"]`)
	}
	return src
}

var (
	genInts    = []string{"0", "1", "-1", "2", "3", "7", "42", "9007199254740993", "9223372036854775807", "(-9223372036854775807 - 1)"}
	genFloats  = []string{"0.0", "0.5", "-2.5", "3.0", "1e308", "1.5e-300", "42.0"}
	genStrings = []string{`""`, `"a"`, `"abc"`, `" 42 "`, `"42"`, `"3.5"`, `"1e3"`, `"héllo"`, `"A b"`, `"a\"b"`, `"-0"`}
	genRegexps = []string{`"^a"`, `"b$"`, `"[0-9]+"`, `"(?i)h.llo"`, `""`}

	recFloats  = []float64{0, math.Copysign(0, -1), 0.5, -2.5, 3, 42, 1e308, -1e308, math.NaN(), math.Inf(1), math.Inf(-1), 9.3e18}
	recInts    = []int64{0, 1, -1, 2, 3, 7, 42, 65536, math.MaxInt32, math.MinInt32, 1 << 53, 1<<53 + 1, math.MaxInt64, math.MinInt64}
	recStrings = []string{"", "a", "abc", " 42 ", "42", "3.5", "1e3", "héllo", "A b", "\xff", "-0", "NaN"}
)

// gen turns fuzz bytes into an expression and records. Running out of bytes
// reads zeros, which choose leaves, so every input makes a finite expression.
type gen struct {
	b []byte
	i int
}

func (g *gen) next() int {
	if g.i >= len(g.b) {
		return 0
	}
	c := g.b[g.i]
	g.i++
	return int(c)
}

func (g *gen) pick(list []string) string { return list[g.next()%len(list)] }

func (g *gen) literal() string {
	switch g.next() % 6 {
	case 0:
		return g.pick(genInts)
	case 1:
		return g.pick(genFloats)
	case 2:
		return g.pick(genStrings)
	case 3:
		return "true"
	case 4:
		return "false"
	}
	return "nil"
}

func (g *gen) expr(depth int) string {
	choices := 14
	if depth >= 5 {
		choices = 2
	}
	switch g.next() % choices {
	case 0:
		return g.pick(genFields)
	case 1:
		return g.literal()
	case 2:
		return "(" + g.pick([]string{"-", "+", "!", "not "}) + g.expr(depth+1) + ")"
	case 3, 4:
		return "(" + g.expr(depth+1) + " " + g.pick([]string{"+", "-", "*", "/", "%", "**", "^"}) + " " + g.expr(depth+1) + ")"
	case 5:
		return "(" + g.expr(depth+1) + " " + g.pick([]string{"==", "!=", "<", ">", "<=", ">="}) + " " + g.expr(depth+1) + ")"
	case 6:
		return "(" + g.expr(depth+1) + " " + g.pick([]string{"&&", "||", "and", "or"}) + " " + g.expr(depth+1) + ")"
	case 7:
		n := 1 + g.next()%3
		items := make([]string, n)
		for i := range items {
			items[i] = g.literal()
		}
		return "(" + g.expr(depth+1) + g.pick([]string{" in ", " not in "}) + "[" + strings.Join(items, ", ") + "])"
	case 8:
		return "(" + g.expr(depth+1) + " ? " + g.expr(depth+1) + " : " + g.expr(depth+1) + ")"
	case 9, 10:
		return g.pick([]string{"abs", "ceil", "floor", "round", "int", "float", "len", "lower", "upper", "trim"}) + "(" + g.expr(depth+1) + ")"
	case 11:
		fn := g.pick([]string{"min", "max"})
		n := 1 + g.next()%3
		args := make([]string, n)
		for i := range args {
			args[i] = g.expr(depth + 1)
		}
		return fn + "(" + strings.Join(args, ", ") + ")"
	case 12:
		switch g.next() % 3 {
		case 0:
			return g.pick([]string{"hasPrefix", "hasSuffix"}) + "(" + g.expr(depth+1) + ", " + g.expr(depth+1) + ")"
		case 1:
			return "(" + g.expr(depth+1) + " " + g.pick([]string{"contains", "startsWith", "endsWith"}) + " " + g.expr(depth+1) + ")"
		}
		return "(" + g.expr(depth+1) + " matches " + g.pick(genRegexps) + ")"
	}
	switch g.next() % 3 {
	case 0:
		return "(" + g.pick(genFields) + g.pick([]string{" == nil", " != nil"}) + ")"
	case 1:
		return "(" + g.pick(genFields) + " ?? " + g.expr(depth+1) + ")"
	}
	return "(" + g.expr(depth+1) + " ?? " + g.expr(depth+1) + ")"
}

// record makes a record with each of genFields missing or holding a value of
// some kind.
func (g *gen) record() *agent.Record {
	r := &agent.Record{}
	for _, src := range genFields {
		name := fieldName(src)
		v := g.next()
		switch g.next() % 6 {
		case 0:
			// missing
		case 1:
			r.Fields = append(r.Fields, agent.Float(name, recFloats[v%len(recFloats)]))
		case 2:
			r.Fields = append(r.Fields, agent.Int(name, recInts[v%len(recInts)]))
		case 3:
			r.Fields = append(r.Fields, agent.String(name, recStrings[v%len(recStrings)]))
		case 4:
			r.Fields = append(r.Fields, agent.Bool(name, v%2 == 1))
		case 5:
			r.Fields = append(r.Fields, agent.Bytes(name, []byte(recStrings[v%len(recStrings)])))
		}
	}
	return r
}

// outcome is what evaluating an expression on a record came to.
type outcome struct {
	compileErr error
	v          Value
	err        error
}

func (o outcome) String() string {
	switch {
	case o.compileErr != nil:
		return "compile error: " + o.compileErr.Error()
	case o.err != nil:
		var ee *EvalError
		if errors.As(o.err, &ee) && ee.Missing {
			return "missing field: " + o.err.Error()
		}
		return "error: " + o.err.Error()
	}
	return fmt.Sprintf("%s (kind %d)", o.v, o.v.Kind)
}

// kind classes an outcome: the value itself, or which way it failed.
func (o outcome) same(p outcome) bool {
	if (o.compileErr != nil) != (p.compileErr != nil) {
		return false
	}
	if o.compileErr != nil {
		return true
	}
	if (o.err != nil) != (p.err != nil) {
		return false
	}
	if o.err != nil {
		var a, b *EvalError
		return errors.As(o.err, &a) && errors.As(p.err, &b) && a.Missing == b.Missing
	}
	return sameValue(o.v, p.v)
}

func sameValue(a, b Value) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case agent.KindFloat:
		return math.Float64bits(a.Float) == math.Float64bits(b.Float) || math.IsNaN(a.Float) && math.IsNaN(b.Float)
	case agent.KindString:
		return a.Str == b.Str
	}
	return a.Int == b.Int
}

func run(p *Program, err error, r *agent.Record) outcome {
	if err != nil {
		return outcome{compileErr: err}
	}
	v, err := p.Eval(r)
	return outcome{v: v, err: err}
}

// publicRun evaluates src with expr's public API on r, fields in a map
// (g.x as a nested map), the way a user of the library would. ok is false
// when a field the expression names is missing from r: the package's
// semantics for those differ from expr's (a missing field is an error, not
// nil) and the comparison with the package's own use of the machine covers
// them.
func publicRun(src string, names []string, r *agent.Record) (o outcome, ok bool) {
	env := map[string]any{}
	for _, name := range names {
		f := r.Field(name)
		if f == nil {
			return outcome{}, false
		}
		var v any
		switch f.Kind {
		case agent.KindFloat:
			v = f.Float
		case agent.KindInt:
			v = int(f.Int)
		case agent.KindBool:
			v = f.Int != 0
		case agent.KindString:
			v = f.Str
		case agent.KindBytes:
			v = string(f.Bytes)
		}
		if outer, inner, dotted := strings.Cut(name, "."); dotted {
			m, _ := env[outer].(map[string]any)
			if m == nil {
				m = map[string]any{}
				env[outer] = m
			}
			m[inner] = v
		} else {
			env[name] = v
		}
	}
	// Without expr's optimiser: it folds x && false into false without
	// running x, so an x that fails would not.
	prog, err := exprlib.Compile(src, exprlib.Optimize(false))
	if err != nil {
		return outcome{compileErr: err}, true
	}
	out, err := exprlib.Run(prog, env)
	if err != nil {
		return outcome{err: &EvalError{Msg: err.Error()}}, true
	}
	v, err := fromAny(out)
	return outcome{v: v, err: err}, true
}

// deviation reports whether the package's use of the machine (v) differs
// from expr's public API (p) on src in one of the ways the README
// documents, each known by the error one side gives:
//   - x % y takes floats (math.Mod), where expr's takes only integers;
//   - the operands of && || ! must be true or false, and the operand of
//     unary + a number, where expr returns them unchecked (true && 5 is 5,
//     +"a" is "a");
//   - int() of NaN, an infinity or a float beyond int64 fails, where expr
//     returns what the processor makes of the conversion;
//   - abs(-0) is 0, where expr's is -0.
func deviation(src string, v, p outcome) bool {
	switch {
	case v.err == nil && p.err != nil:
		msg := p.err.Error()
		return strings.Contains(msg, "invalid operation: float64 %") || strings.Contains(msg, "% float64")
	case v.err != nil && p.err == nil:
		msg := v.err.Error()
		return strings.Contains(msg, errNeedBool.Error()) || strings.Contains(msg, errNeedNumber.Error()) ||
			strings.Contains(msg, errIntRange.Error())
	case v.err == nil && p.err == nil:
		return strings.Contains(src, "abs(") && v.v.Kind == agent.KindFloat && p.v.Kind == agent.KindFloat &&
			v.v.Float == 0 && p.v.Float == 0
	}
	return false
}

// checkAgree compiles src both ways and compares them on each record.
func checkAgree(t *testing.T, src string, recs ...*agent.Record) {
	t.Helper()
	cp, cerr := Compile(src)
	vp, verr := compile(src, true)
	for _, r := range recs {
		c, v := run(cp, cerr, r), run(vp, verr, r)
		if cerr != nil && verr == nil {
			// Compile refuses a constant part that fails (float(""),
			// 1 % (1 - 1), a ?? float(true)) even where it would not be
			// reached; expr's optimiser folds less, and the machine fails
			// on the records that reach it. The operations folded are the
			// ones compared here with fields for operands.
			continue
		}
		if v.err != nil && strings.HasSuffix(v.err.Error(), beyondVMInt) {
			// On a 32-bit processor the machine refuses an integer
			// field beyond 32 bits rather than cut it.
			continue
		}
		if !c.same(v) {
			t.Fatalf("%s\non %s\nclosures: %s\nexpr VM:  %s", src, fmtRecord(r), c, v)
		}
		if verr != nil {
			continue
		}
		if p, ok := publicRun(src, vp.vm.names, r); ok && !v.same(p) && !deviation(src, v, p) && !(v.compileErr != nil && p.err != nil) {
			t.Fatalf("%s\non %s\nexpr VM (pspf): %s\nexpr.Run:       %s", src, fmtRecord(r), v, p)
		}
	}
}

func fmtRecord(r *agent.Record) string {
	var b strings.Builder
	b.WriteString("{")
	for i, f := range r.Fields {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: ", f.Name)
		switch f.Kind {
		case agent.KindFloat:
			fmt.Fprintf(&b, "float %v", f.Float)
		case agent.KindInt:
			fmt.Fprintf(&b, "int %d", f.Int)
		case agent.KindString:
			fmt.Fprintf(&b, "string %q", f.Str)
		case agent.KindBool:
			fmt.Fprintf(&b, "bool %v", f.Int != 0)
		case agent.KindBytes:
			fmt.Fprintf(&b, "bytes %q", f.Bytes)
		}
	}
	b.WriteString("}")
	return b.String()
}

// FuzzClosuresAgreeWithVM holds the compiled closures to expr's virtual
// machine on generated expressions and records. Run it longer with
//
//	go test -run '^$' -fuzz FuzzClosuresAgreeWithVM -fuzztime 10m ./operators/expr
func FuzzClosuresAgreeWithVM(f *testing.F) {
	// Seeds from a fixed generator: every run of go test tries the same
	// few hundred expressions, each on three records.
	rng := rand.New(rand.NewPCG(26, 5))
	for range 400 {
		e, r := make([]byte, 64), make([]byte, 24)
		for i := range e {
			e[i] = byte(rng.Uint32())
		}
		for i := range r {
			r[i] = byte(rng.Uint32())
		}
		f.Add(e, r)
	}
	f.Fuzz(func(t *testing.T, exprBytes, recBytes []byte) {
		g := &gen{b: exprBytes}
		src := g.expr(0)
		rg := &gen{b: recBytes}
		recs := []*agent.Record{rg.record(), rg.record(), {}}
		checkAgree(t, src, recs...)
	})
}

// TestClosuresAgreeWithVM holds the closures to the machine on the
// disagreements the fuzz target found, and on the ones found by reading the
// two, each on the record that showed it.
func TestClosuresAgreeWithVM(t *testing.T) {
	tests := []struct {
		src string
		rec *agent.Record
	}{
		// A missing field fails on the machine as in the closures.
		{"b", &agent.Record{}},
		{"a == 1", &agent.Record{}},
		{"a != \"x\"", &agent.Record{}},
		{"a in [1, 2]", &agent.Record{}},
		{"a == nil && b ?? true", &agent.Record{}},
		// Only a field itself is nil when missing.
		{"(a + 1) == nil", &agent.Record{}},
		{"(a + 1) ?? 0", &agent.Record{}},
		// max and min: every argument evaluated before any is checked; a
		// single argument is given back; integers compared as integers.
		{"max(a, c)", &agent.Record{Fields: []agent.Field{agent.String("a", "NaN")}}},
		{"min(a)", &agent.Record{Fields: []agent.Field{agent.Bool("a", true)}}},
		{"max(a, b)", &agent.Record{Fields: []agent.Field{agent.Int("a", 1<<53), agent.Int("b", 1<<53+1)}}},
		{"min(b, a)", &agent.Record{Fields: []agent.Field{agent.Int("a", 1<<53), agent.Int("b", 1<<53+1)}}},
		// in on a list of strings.
		{"a in [\"42\"]", &agent.Record{Fields: []agent.Field{agent.Bool("a", false)}}},
		{"a not in [\"42\"]", &agent.Record{Fields: []agent.Field{agent.Int("a", 42)}}},
		// && || ! and unary + check their operands.
		{"true && a", &agent.Record{Fields: []agent.Field{agent.Float("a", 0)}}},
		{"a && true", &agent.Record{Fields: []agent.Field{agent.Float("a", 0)}}},
		{"false || a", &agent.Record{Fields: []agent.Field{agent.String("a", "x")}}},
		{"!a", &agent.Record{Fields: []agent.Field{agent.Int("a", 0)}}},
		{"+a", &agent.Record{Fields: []agent.Field{agent.String("a", "")}}},
		// int() of what int64 cannot hold.
		{"int(a)", &agent.Record{Fields: []agent.Field{agent.Float("a", math.NaN())}}},
		{"int(a)", &agent.Record{Fields: []agent.Field{agent.Float("a", 1e300)}}},
		{"int(a)", &agent.Record{Fields: []agent.Field{agent.Float("a", -0x1p63)}}},
		// int() and float() of strings read them as expr does.
		{"float(a)", &agent.Record{Fields: []agent.Field{agent.String("a", " 42 ")}}},
		{"int(a)", &agent.Record{Fields: []agent.Field{agent.String("a", "3.5")}}},
		{"int(a)", &agent.Record{Fields: []agent.Field{agent.String("a", "1e3")}}},
		{"float(a)", &agent.Record{Fields: []agent.Field{agent.String("a", "1e3")}}},
		// abs(-0) is 0.
		{"abs(a)", &agent.Record{Fields: []agent.Field{agent.Float("a", math.Copysign(0, -1))}}},
		// % takes floats.
		{"a % 2", &agent.Record{Fields: []agent.Field{agent.Float("a", 5.5)}}},
		{"a % b", &agent.Record{Fields: []agent.Field{agent.Float("a", 0), agent.Float("b", 0)}}},
		{"a % b", &agent.Record{Fields: []agent.Field{agent.Int("a", math.MinInt64), agent.Int("b", -1)}}},
		{"a % b", &agent.Record{Fields: []agent.Field{agent.Int("a", 7), agent.Int("b", 0)}}},
		{"abs(a % a) in [0]", &agent.Record{Fields: []agent.Field{agent.Float("a", 0)}}},
		{"a % 3 == 1", &agent.Record{Fields: []agent.Field{agent.Float("a", 4)}}},
		// nil in string operators is false; the builtins need strings.
		{"(true ? nil : a) matches \"^a\"", &agent.Record{}},
		{"a contains (true ? nil : a)", &agent.Record{Fields: []agent.Field{agent.String("a", "x")}}},
		{"hasPrefix(a, (true ? nil : a))", &agent.Record{Fields: []agent.Field{agent.String("a", "x")}}},
		// Integers beyond 32 bits: the machine's are on armv6 and armv7
		// (GOARCH=386 go test shows it on amd64).
		{"a * a", &agent.Record{Fields: []agent.Field{agent.Int("a", 65536)}}},
		{"a * a > 0", &agent.Record{Fields: []agent.Field{agent.Int("a", 65536)}}},
		{"-a", &agent.Record{Fields: []agent.Field{agent.Int("a", math.MinInt32)}}},
		{"abs(a)", &agent.Record{Fields: []agent.Field{agent.Int("a", math.MinInt32)}}},
		{"a", &agent.Record{Fields: []agent.Field{agent.Int("a", 1<<53+1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			checkAgree(t, tt.src, tt.rec)
		})
	}
}
