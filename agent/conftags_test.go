package agent

import (
	"strings"
	"testing"
	"time"
)

type rangeConfig struct {
	Name    string        `yaml:"name" required:"true"`
	Batch   int           `yaml:"batch" min:"1" max:"65536"`
	Count   int64         `yaml:"count" min:"0"`
	Burst   uint          `yaml:"burst" min:"1"`
	Rate    float64       `yaml:"rate" min:">0"`
	Ratio   float64       `yaml:"ratio" min:">0" max:"1"`
	Linger  time.Duration `yaml:"linger" max:"1s"`
	Timeout time.Duration `yaml:"timeout" min:">0"`
	Keep    time.Duration `yaml:"keep" min:"1s"`
	Size    ByteSize      `yaml:"size" min:"64KiB" max:"1GiB"`
	Limit   *int          `yaml:"limit" min:"2"`
	Nested  struct {
		Topic string `yaml:"topic" required:"true"`
	} `yaml:"nested"`
	checked bool
}

func (c *rangeConfig) Validate(n Node) {
	c.checked = true
	if n.Field("batch").HasErrors() {
		n.Field("batch").Errorf("validator saw the range error")
	}
}

func defaultRange() *rangeConfig {
	return &rangeConfig{Name: "", Batch: 100, Burst: 1, Rate: 1, Ratio: 0.5, Linger: 5 * time.Millisecond, Timeout: time.Second, Keep: time.Minute, Size: 1 << 20}
}

func TestRuleTags(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string // the errors' texts, in order; nil: none
	}{
		{"name: a", nil},
		{"name: a\nbatch: 1\ncount: 0\nrate: 0.001\nratio: 1\nlinger: 1s\nkeep: 1s\nsize: 64KiB\nlimit: 2", nil},
		{"name: a\nbatch: 65536\nsize: 1GiB", nil},
		{"name: a\nbatch: 0", []string{
			`c.yaml:2: batch: must be between 1 and 65536, got "0"`,
			`c.yaml:2: batch: validator saw the range error`}},
		{"name: a\nbatch: 65537", []string{`c.yaml:2: batch: must be between 1 and 65536, got "65537"`, `c.yaml:2: batch: validator saw the range error`}},
		{"name: a\ncount: -1", []string{`c.yaml:2: count: must not be negative, got "-1"`}},
		{"name: a\nburst: 0", []string{`c.yaml:2: burst: must be at least 1, got "0"`}},
		{"name: a\nrate: 0", []string{`c.yaml:2: rate: must be positive, got "0"`}},
		{"name: a\nrate: -2.5", []string{`c.yaml:2: rate: must be positive, got "-2.5"`}},
		{"name: a\nrate: NaN", []string{`c.yaml:2: rate: must be positive, got "NaN"`}},
		{"name: a\nratio: 0", []string{`c.yaml:2: ratio: must be greater than 0 and at most 1, got "0"`}},
		{"name: a\nratio: 1.5", []string{`c.yaml:2: ratio: must be greater than 0 and at most 1, got "1.5"`}},
		{"name: a\nlinger: 1001ms", []string{`c.yaml:2: linger: must be at most 1s, got "1001ms"`}},
		{"name: a\ntimeout: 0s", []string{`c.yaml:2: timeout: must be positive, got "0s"`}},
		{"name: a\nkeep: 999ms", []string{`c.yaml:2: keep: must be at least 1s, got "999ms"`}},
		{"name: a\nsize: 63KiB", []string{`c.yaml:2: size: must be between 64KiB and 1GiB, got "63KiB"`}},
		{"name: a\nsize: 2GiB", []string{`c.yaml:2: size: must be between 64KiB and 1GiB, got "2GiB"`}},
		{"name: a\nlimit: 1", []string{`c.yaml:2: limit: must be at least 2, got "1"`}},
		// A value that does not decode is reported once, for its type.
		{"name: a\nbatch: many", []string{`c.yaml:2: batch: must be an integer, got "many"`, `c.yaml:2: batch: validator saw the range error`}},
		// The text quoted is the one written, before ${...}.
		{"name: a\nbatch: ${BATCH}", []string{`c.yaml:2: batch: must be between 1 and 65536, got "${BATCH}"`, `c.yaml:2: batch: validator saw the range error`}},
		// required: absent (at the parent's line), written empty, null.
		{"batch: 5", []string{`c.yaml:1: name: must not be empty`}},
		{"name: ''", []string{`c.yaml:1: name: must not be empty`}},
		{"batch: 5\nname:", []string{`c.yaml:2: name: must not be empty`}},
		// Rules apply in a nested mapping when it is written.
		{"name: a\nnested: {}", []string{`c.yaml:2: nested.topic: must not be empty`}},
		{"name: a\nnested: {topic: t}", nil},
	} {
		t.Run(strings.ReplaceAll(tc.yaml, "\n", ";"), func(t *testing.T) {
			root := ParseConfig("c.yaml", []byte(tc.yaml), func(k string) (string, bool) { return map[string]string{"BATCH": "0"}[k], k == "BATCH" }, nil)
			c := defaultRange()
			ok := root.Decode(c)
			var got []string
			for _, e := range root.Errors() {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") || ok != (len(tc.want) == 0) {
				t.Errorf("got ok %v and errors\n%s\nwant\n%s", ok, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if !c.checked {
				t.Error("the Validator was not called")
			}
		})
	}
}

// A component written with no body keeps its defaults; CheckDefaults
// applies the required tags and the Validator to them.
func TestCheckDefaults(t *testing.T) {
	root := ParseConfig("c.yaml", []byte("comp:\n"), nil, nil)
	c := defaultRange()
	if root.Field("comp").CheckDefaults(c) {
		t.Error("got ok, want the empty name reported")
	}
	var got []string
	for _, e := range root.Errors() {
		got = append(got, e.Error())
	}
	if want := []string{`c.yaml:1: comp.name: must not be empty`}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, want)
	}
	if !c.checked {
		t.Error("the Validator was not called")
	}
}

// Tags that do not parse are a programming error, found by any decoding of
// the type.
func TestBadRuleTags(t *testing.T) {
	for name, v := range map[string]any{
		"min on a string": &struct {
			S string `yaml:"s" min:"1"`
		}{},
		"bound not a number": &struct {
			N int `yaml:"n" max:"lots"`
		}{},
		"duration bound": &struct {
			D time.Duration `yaml:"d" min:"5"`
		}{},
		"size bound": &struct {
			B ByteSize `yaml:"b" max:"1 parsec"`
		}{},
		"required not a bool": &struct {
			S string `yaml:"s" required:"yes please"`
		}{},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("got no panic, want one")
				}
			}()
			ParseConfig("c.yaml", []byte("other: 1"), nil, nil).Decode(v)
		})
	}
}
