package runner

import (
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Schema returns a JSON Schema (draft 2020-12) of the pipeline file format,
// built from the registered components' config types, so that editors can
// complete and check pipeline files.
func (r *Registry) Schema() map[string]any {
	entry := func(what string, types map[string]any, sink bool) map[string]any {
		var alts []any
		for _, name := range sortedKeys(types) {
			props := map[string]any{name: types[name], "name": map[string]any{"type": "string", "description": "a name for this " + what + ", unique in the pipeline"}}
			if sink {
				for k, v := range structSchema(reflect.TypeOf(SinkOptions{}))["properties"].(map[string]any) {
					props[k] = v
				}
			}
			alts = append(alts, map[string]any{"type": "object", "required": []string{name}, "additionalProperties": false, "properties": props})
		}
		return map[string]any{"type": "array", "items": map[string]any{"oneOf": alts}}
	}
	src, ops, sinks := map[string]any{}, map[string]any{}, map[string]any{}
	for n, f := range r.Sources {
		src[n] = withDoc(structSchema(reflect.TypeOf(f.Config()).Elem()), f.Doc)
	}
	for n, f := range r.Operators {
		ops[n] = withDoc(structSchema(reflect.TypeOf(f.Config()).Elem()), f.Doc)
	}
	for n, f := range r.Sinks {
		sinks[n] = withDoc(structSchema(reflect.TypeOf(f.Config()).Elem()), f.Doc)
	}
	props := structSchema(reflect.TypeOf(pipelineFile{}))["properties"].(map[string]any)
	props["sources"] = entry("source", src, false)
	props["operators"] = entry("operator", ops, false)
	props["sinks"] = entry("sink", sinks, true)
	dl := entry("sink", sinks, true)["items"]
	props["dead_letter"] = dl
	return map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"title":                "pspf-edge pipeline",
		"type":                 "object",
		"required":             []string{"sources", "sinks"},
		"additionalProperties": false,
		"properties":           props,
	}
}

func withDoc(s map[string]any, doc string) map[string]any {
	if doc != "" {
		s["description"] = doc
	}
	return s
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if opts == "inline" || (f.Anonymous && tag == "") {
				walk(f.Type)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			s := typeSchema(f.Type)
			if e := f.Tag.Get("enum"); e != "" {
				s["enum"] = strings.Split(e, ",")
			}
			if d := f.Tag.Get("doc"); d != "" {
				s["description"] = d
			}
			ruleSchema(s, f)
			props[name] = s
		}
	}
	walk(t)
	return map[string]any{"type": "object", "additionalProperties": false, "properties": props}
}

// ruleSchema adds the range of a number's min and max tags (see
// agent.Node.Decode) to its schema s. Durations and sizes are strings in
// the schema: their ranges are left to the decoder's messages; so is the
// required tag, which a non-empty default meets without the key written.
func ruleSchema(s map[string]any, f reflect.StructField) {
	if s["type"] != "integer" && s["type"] != "number" {
		return
	}
	if v, ok := f.Tag.Lookup("min"); ok {
		bound, exclusive := strings.CutPrefix(v, ">")
		if x, err := strconv.ParseFloat(bound, 64); err == nil {
			if exclusive {
				s["exclusiveMinimum"] = x
			} else {
				s["minimum"] = x
			}
		}
	}
	if v, ok := f.Tag.Lookup("max"); ok {
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			s["maximum"] = x
		}
	}
}

func typeSchema(t reflect.Type) map[string]any {
	switch t {
	case reflect.TypeOf(time.Duration(0)):
		return map[string]any{"type": "string", "pattern": `^([0-9.]+(ns|us|µs|ms|s|m|h))+$`}
	case reflect.TypeOf(agent.ByteSize(0)):
		return map[string]any{"type": []string{"integer", "string"}, "pattern": `^[0-9.]+ *(B|KB|MB|GB|KiB|MiB|GiB)?$`}
	case reflect.TypeOf(agent.Node{}):
		return map[string]any{}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeSchema(t.Elem())
	case reflect.Struct:
		return structSchema(t)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string"}
		}
		return map[string]any{"type": "array", "items": typeSchema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": typeSchema(t.Elem())}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{}
}
