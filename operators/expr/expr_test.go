package expr

import (
	"errors"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

func rec() *agent.Record {
	return &agent.Record{Fields: []agent.Field{
		agent.Float("temp", 21.5),
		agent.Int("count", 7),
		agent.String("device", "sensor-1"),
		agent.Bool("ok", true),
		agent.Float("gps.lat", 52.5),
		agent.String("odd name", "x"),
		agent.Bytes("blob", []byte("raw")),
	}}
}

func TestEval(t *testing.T) {
	tests := []struct {
		src      string
		want     string
		compiled bool
	}{
		{"temp > -50", "true", true},
		{"temp * 1.8 + 32", "70.7", true},
		{"count + 1", "8", true},
		{"count / 2", "3.5", true},
		{"count % 4", "3", true},
		{"count ** 2", "49", true},
		{"-temp", "-21.5", true},
		{"device == \"sensor-1\"", "true", true},
		{"device != 'sensor-1'", "false", true},
		{"device + \"/\" + device", `"sensor-1/sensor-1"`, true},
		{"ok && temp < 30", "true", true},
		{"!ok || count >= 7", "true", true},
		{"not ok", "false", true},
		{"count == 7.0", "true", true},
		{"device in [\"a\", \"sensor-1\"]", "true", true},
		{"count in [1, 2, 3]", "false", true},
		{"device not in [\"a\"]", "true", true},
		{"device contains \"sor\"", "true", true},
		{"device startsWith \"sen\" and device endsWith \"-1\"", "true", true},
		{"device matches \"^sensor-[0-9]+$\"", "true", true},
		{"missing == nil", "true", true},
		{"temp != nil", "true", true},
		{"missing ?? 3", "3", true},
		{"temp ?? 3", "21.5", true},
		{"temp > 20 ? \"warm\" : \"cold\"", `"warm"`, true},
		{"abs(-temp)", "21.5", true},
		{"round(temp)", "22", true},
		{"floor(temp) + ceil(temp)", "43", true},
		{"max(temp, count, 3)", "21.5", true},
		{"min(temp, count)", "7", true},
		{"int(temp)", "21", true},
		{"float(\"2.5\") * 2", "5", true},
		{"len(device)", "8", true},
		{"upper(device)", `"SENSOR-1"`, true},
		{"gps.lat > 50", "true", true},
		{"$env[\"odd name\"] == \"x\"", "true", true},
		{"blob == \"raw\"", "true", true},
		{"2 * 3 + 1", "7", true},
		{"device == 1", "false", true},
		{"split(device, \"-\")[1]", `"1"`, false},
		{"count in 1..10", "true", false},
		{"let c = count * 2; c + 1", "15", false},
		{"toJSON(count)", `"7"`, false},
		{"date(\"2024-01-02\") - date(\"2024-01-01\") == duration(\"24h\")", "true", false},
		{"let c = -count; c * c - count % 4", "46", false},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := Compile(tt.src)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			v, err := p.Eval(rec())
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if got := v.String(); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if got := p.Compiled(); got != tt.compiled {
				t.Errorf("Compiled: got %v, want %v", got, tt.compiled)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		src  string
		want string
	}{
		{"temp >", "column 6: unexpected token EOF"},
		{"temp > > 5", "column 8:"},
		{"1 % 0", "column 3: integer modulo by zero"},
		{"device matches \"[\"", "column 8: error parsing regexp"},
		{"temp > 5 &&", "column 11: unexpected token EOF"},
		{"", "column 1: expression is empty"},
		{"(temp", "column 5: unexpected token EOF"},
		{"temp >\n  >", "line 2, column 3:"},
		// Calls that can never succeed are refused before any record.
		{"nosuchfunc(temp) > 1", "column 1: unknown function nosuchfunc"},
		{"temp > 1 && rond(temp) > 2", "column 13: unknown function rond (did you mean round?)"},
		{"temp.round() > 1", "column 6: unknown function round: field values"},
		{"$env(temp)", "column 1: unknown function $env"},
		// Wrong arity and argument types the checker knows.
		{"abs(temp, 2)", "column 1: invalid number of arguments (expected 1, got 2)"},
		{"upper(5)", "column 7: cannot use int as argument (type string) to call upper"},
		{"1 + \"a\"", "column 3: invalid operation: + (mismatched types int and string)"},
		// Results no field can hold.
		{"split(device, \"-\")", "column 1: result is a list"},
		{"now()", "column 1: result is a date"},
		{"now() - now()", "column 1: result is a duration"},
		// Values have no methods (third_party/README.md: expr looks none
		// up), called or not.
		{"now().Year() == 2026", "column 7: unknown function Year: field values"},
		{"now().Year == 2026", "column 7: type time.Time has no field Year"},
		{"(now() - now()).Hours > 1", "column 17: type time.Duration has no field Hours"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := Compile(tt.src)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *CompileError", err)
			}
			if got := err.Error(); !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want prefix %q", got, tt.want)
			}
		})
	}
}

func TestEvalErrors(t *testing.T) {
	tests := []struct {
		src     string
		want    string
		missing bool
	}{
		{"nope > 1", `column 1: field "nope" is missing`, true},
		{"temp > 1 && nope", `column 13: field "nope" is missing`, true},
		{"device * 2", "column 8: operator * needs two numbers", false},
		{"device > 2", "column 8: operator > needs two numbers or two strings", false},
		{"count % (count - 7)", "column 7: integer modulo by zero", false},
		{"temp && ok", "column 6: operator && needs true or false on both sides", false},
		{"-device", "column 1: operator - needs a number", false},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := Compile(tt.src)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			_, err = p.Eval(rec())
			var ee *EvalError
			if !errors.As(err, &ee) {
				t.Fatalf("got %v, want an *EvalError", err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if ee.Missing != tt.missing {
				t.Errorf("Missing: got %v, want %v", ee.Missing, tt.missing)
			}
		})
	}
}

func TestEvalBool(t *testing.T) {
	p := MustCompile("temp - 1")
	if _, err := p.EvalBool(rec()); err == nil {
		t.Errorf("got nil error for a number, want one")
	}
	if got := p.Type(); got != TypeNumber {
		t.Errorf("Type: got %v, want number", got)
	}
	if got := MustCompile("temp > 1").Type(); got != TypeBool {
		t.Errorf("Type: got %v, want bool", got)
	}
}

func TestFallbackMissingField(t *testing.T) {
	p := MustCompile("trimPrefix(nope, \"x\") == \"X\"")
	if p.Compiled() {
		t.Fatalf("got compiled, want fallback")
	}
	if _, err := p.Eval(rec()); err == nil {
		t.Errorf("got nil error, want one")
	}
}

func TestEvalAllocs(t *testing.T) {
	r := rec()
	for _, src := range []string{"temp > -50", "temp * 1.8 + 32", "device == \"sensor-1\" && count in [1, 7]", "max(abs(temp), 3) > 2"} {
		p := MustCompile(src)
		if got := testing.AllocsPerRun(100, func() { _, _ = p.Eval(r) }); got != 0 {
			t.Errorf("%s: got %v allocs, want 0", src, got)
		}
	}
}

func BenchmarkEval(b *testing.B) {
	r := rec()
	p := MustCompile("temp * 1.8 + 32")
	b.ReportAllocs()
	for b.Loop() {
		_, _ = p.Eval(r)
	}
}
