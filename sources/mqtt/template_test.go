package mqtt

import (
	"slices"
	"testing"
)

func TestTemplateMatch(t *testing.T) {
	tests := []struct {
		tmpl, topic, key string
		ok               bool
		vals             []string
		wantKey          string
	}{
		{"sensors/{site}/{device}/temp", "sensors/plant1/d7/temp", "{device}", true, []string{"plant1", "d7"}, "d7"},
		{"sensors/{site}/{device}/temp", "sensors/plant1/d7/hum", "", false, nil, ""},
		{"sensors/{site}/{device}/temp", "sensors/plant1/temp", "", false, nil, ""},
		{"sensors/{site}/{device}/temp", "sensors/plant1/d7/temp/x", "", false, nil, ""},
		{"sensors/{site}/+/{kind}", "sensors/p/anything/rh", "{site}-{kind}", true, []string{"p", "rh"}, "p-rh"},
		{"{a}/#", "x/y/z", "k:{a}", true, []string{"x"}, "k:x"},
		{"{a}/#", "x", "", true, []string{"x"}, ""},
		{"a/{b}", "a/", "{b}", true, []string{""}, ""},
		{"a/{b}", "a", "", false, nil, ""},
		{"{a}", "caf\xe9", "{a}", true, []string{"caf\xe9"}, "caf\xe9"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl+"|"+tt.topic, func(t *testing.T) {
			tm, err := parseTemplate(tt.tmpl)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			vals := make([]string, len(tm.names))
			ok := tm.match(tt.topic, vals)
			if ok != tt.ok {
				t.Fatalf("got ok=%v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if !slices.Equal(vals, tt.vals) {
				t.Errorf("got %q, want %q", vals, tt.vals)
			}
			if tt.key != "" {
				kp, err := parseKey(tt.key, tm)
				if err != nil {
					t.Fatalf("key: %v", err)
				}
				if got := buildKey(kp, vals); got != tt.wantKey {
					t.Errorf("got key %q, want %q", got, tt.wantKey)
				}
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, s := range []string{"a/#/b", "a/{}/b", "a/{x}/{x}", "a/b{x}", "a/x+"} {
		if _, err := parseTemplate(s); err == nil {
			t.Errorf("%q: got no error, want one", s)
		}
	}
	tm, _ := parseTemplate("a/{x}")
	for _, k := range []string{"{y}", "{x"} {
		if _, err := parseKey(k, tm); err == nil {
			t.Errorf("key %q: got no error, want one", k)
		}
	}
	if _, err := parseKey("{x}", nil); err == nil {
		t.Errorf("key without template: got no error, want one")
	}
}

func FuzzTemplate(f *testing.F) {
	f.Add("sensors/{site}/{device}/temp", "sensors/a/b/temp")
	f.Add("{a}/+/#", "x//y/z")
	f.Fuzz(func(t *testing.T, tmpl, topic string) {
		tm, err := parseTemplate(tmpl)
		if err != nil || tm == nil {
			return
		}
		vals := make([]string, len(tm.names))
		tm.match(topic, vals)
	})
}

func TestCheckFilter(t *testing.T) {
	good := []string{"a", "a/+/c", "#", "a/#", "$share/g/a/#", "+/+"}
	bad := []string{"", "a/#/b", "a#", "a/b+", "$share/g", "$share//a", "$share/g+/a"}
	for _, f := range good {
		if msg := checkFilter(f); msg != "" {
			t.Errorf("%q: got %q, want ok", f, msg)
		}
	}
	for _, f := range bad {
		if msg := checkFilter(f); msg == "" {
			t.Errorf("%q: got ok, want an error", f)
		}
	}
}
