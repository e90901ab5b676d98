package agent

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ConfigError is one problem in a config file: where it is and which rule the
// value breaks. Its text has the form `file:line: path: rule, got "value"`.
type ConfigError struct {
	File string
	Line int
	Path string
	Msg  string
}

// Error returns the problem as `file:line: path: rule`.
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigErrors is every problem found in one or more config files, in file and
// line order. Validation collects them all instead of stopping at the first.
type ConfigErrors []*ConfigError

// Error returns every problem, one a line.
func (es ConfigErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Validator is implemented by config types with rules beyond their types. It is
// called after decoding with the node the value came from, so that it can report
// a problem at the line of the offending key: n.Field("path").Errorf(...).
type Validator interface {
	Validate(n Node)
}

// ByteSize is a size in bytes, written in configs as a plain number or with a
// unit: 512KiB, 64MiB, 1GiB, 10MB.
type ByteSize int64

// document is one parsed config file: its name, its errors so far, and the text
// of every scalar as written before ${...} substitution, so that messages never
// show a secret.
type document struct {
	file     string
	errs     ConfigErrors
	orig     map[*yaml.Node]string
	readFile func(string) ([]byte, error) // nil: os.ReadFile
	// unresolved holds the scalars whose ${...} could not be substituted:
	// that error is theirs; a rule their raw text breaks is not reported.
	unresolved map[*yaml.Node]bool
}

// Node is one YAML value in a config file together with its place: the file,
// the line and the path from the document's root (`sinks[0].file.path`).
// Problems found while decoding and validating are collected in the document.
// The zero Node stands for a value that is absent.
type Node struct {
	y    *yaml.Node
	path string
	line int // line to report for an absent value: its parent's
	doc  *document
}

// Path returns the node's path from the document root.
func (n Node) Path() string { return n.path }

// Line returns the node's line, or its parent's when the value is absent.
func (n Node) Line() int {
	if n.y != nil {
		return n.y.Line
	}
	return n.line
}

// Present reports whether the value was written in the file.
func (n Node) Present() bool { return n.y != nil }

// File returns the name of the file the node came from.
func (n Node) File() string {
	if n.doc == nil {
		return ""
	}
	return n.doc.file
}

// Text returns the scalar as written in the file, before ${...} substitution,
// so that it can be quoted in messages without revealing a secret.
func (n Node) Text() string {
	if n.y == nil {
		return ""
	}
	if s, ok := n.doc.orig[n.y]; ok {
		return s
	}
	if n.y.Kind == yaml.ScalarNode {
		return n.y.Value
	}
	return kindName(n.y)
}

// ReadFile reads a file the config names, for a Validator that checks it
// (a CA certificate that must parse), with the function given to
// ParseConfig (the runner's Registry.ReadFile).
func (n Node) ReadFile(name string) ([]byte, error) {
	if n.doc != nil && n.doc.readFile != nil {
		return n.doc.readFile(name)
	}
	return os.ReadFile(name)
}

// Errorf records a problem with this node's value.
func (n Node) Errorf(format string, args ...any) {
	if n.doc == nil || n.y != nil && n.doc.unresolved[n.y] {
		return
	}
	n.doc.errs = append(n.doc.errs, &ConfigError{File: n.doc.file, Line: n.Line(), Path: n.path, Msg: fmt.Sprintf(format, args...)})
}

// Errors returns every problem recorded so far in the node's file, in the
// order they were found; nil if there is none.
func (n Node) Errors() ConfigErrors {
	if n.doc == nil || len(n.doc.errs) == 0 {
		return nil
	}
	return slices.Clone(n.doc.errs)
}

// HasErrors reports whether a problem was recorded for this node or a value
// below it: a Validator can skip the rules that compare values one of which
// did not decode (it was left at its default).
func (n Node) HasErrors() bool {
	if n.doc == nil {
		return false
	}
	for _, e := range n.doc.errs {
		if e.Path == n.path || strings.HasPrefix(e.Path, n.path+".") || strings.HasPrefix(e.Path, n.path+"[") {
			return true
		}
	}
	return false
}

// Field returns the value of key in a mapping node; absent if there is none.
func (n Node) Field(key string) Node {
	c := Node{path: joinPath(n.path, key), line: n.Line(), doc: n.doc}
	if n.y != nil && n.y.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.y.Content); i += 2 {
			if n.y.Content[i].Value == key {
				c.y = n.y.Content[i+1]
				break
			}
		}
	}
	return c
}

// Index returns the i-th element of a sequence node.
func (n Node) Index(i int) Node {
	c := Node{path: n.path + "[" + strconv.Itoa(i) + "]", line: n.Line(), doc: n.doc}
	if n.y != nil && n.y.Kind == yaml.SequenceNode && i < len(n.y.Content) {
		c.y = n.y.Content[i]
	}
	return c
}

// Key returns a node for key itself in a mapping, rather than its value, to
// report a problem with the key (a name nobody knows): it is absent, with
// the value's path and the key's line. Without the key, it is Field(key).
func (n Node) Key(key string) Node {
	c := n.Field(key)
	if n.y != nil && n.y.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.y.Content); i += 2 {
			if n.y.Content[i].Value == key {
				c.line, c.y = n.y.Content[i].Line, nil
				break
			}
		}
	}
	return c
}

// Without returns a mapping node like n but without the given keys, at n's
// place: for decoding the rest of a mapping some of whose keys are read
// apart. Any other node is returned as it is.
func (n Node) Without(keys ...string) Node {
	if n.y == nil || n.y.Kind != yaml.MappingNode {
		return n
	}
	c := *n.y
	c.Content = nil
	for i := 0; i+1 < len(n.y.Content); i += 2 {
		if !slices.Contains(keys, n.y.Content[i].Value) {
			c.Content = append(c.Content, n.y.Content[i], n.y.Content[i+1])
		}
	}
	n.y = &c
	return n
}

// Keys returns the keys of a mapping node in file order.
func (n Node) Keys() []string {
	if n.y == nil || n.y.Kind != yaml.MappingNode {
		return nil
	}
	keys := make([]string, 0, len(n.y.Content)/2)
	for i := 0; i+1 < len(n.y.Content); i += 2 {
		keys = append(keys, n.y.Content[i].Value)
	}
	return keys
}

// IsMapping reports whether the node is a YAML mapping.
func (n Node) IsMapping() bool { return n.y != nil && n.y.Kind == yaml.MappingNode }

// IsNull reports whether the value is written as nothing (`key:`, `key: ~`,
// `key: null`). Decode leaves its target as it is for such a value, and
// does not validate it.
func (n Node) IsNull() bool { return n.y != nil && isNull(n.y) }

func isNull(y *yaml.Node) bool { return y.Kind == yaml.ScalarNode && y.Tag == "!!null" }

// WriteCanonical writes the node's value to w without comments, layout or
// positions: two nodes write the same bytes exactly when they hold the same
// YAML values. What it writes is after ${...} substitution and may hold a
// secret: it is for hashing (a component's fingerprint), never for a log.
// An absent node writes nothing.
func (n Node) WriteCanonical(w io.Writer) {
	if n.y != nil {
		writeCanonical(w, n.y)
	}
}

// writeCanonical writes the content of y, without comments or positions.
// The tree has no aliases left: ParseConfig expanded them, within a bound.
func writeCanonical(w io.Writer, y *yaml.Node) {
	fmt.Fprintf(w, "%d:%s:%q[", y.Kind, y.Tag, y.Value)
	for _, c := range y.Content {
		writeCanonical(w, c)
	}
	io.WriteString(w, "]")
}

// Decode decodes the node into v, a pointer, strictly: unknown keys, wrong
// types, values outside an `enum:"a,b"` tag and values that break a rule tag
// (`required:"true"`, `min:"1" max:"65536"`, `min:">0"`, `max:"1s"`,
// `min:"64KiB"`; see fieldRule in conftags.go) are recorded as errors, and
// decoding goes on so that every problem is found. Values that implement
// Validator are validated after decoding, and after their fields' rule
// tags. It reports whether no error was found.
func (n Node) Decode(v any) bool {
	before := len(n.doc.errs)
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("agent: Node.Decode needs a non-nil pointer") // a programming error, never input
	}
	n.decode(rv.Elem(), "")
	return len(n.doc.errs) == before
}

var (
	durationType   = reflect.TypeOf(time.Duration(0))
	byteSizeType   = reflect.TypeOf(ByteSize(0))
	nodeType       = reflect.TypeOf(Node{})
	validatorType  = reflect.TypeOf((*Validator)(nil)).Elem()
	errNotAMapping = "must be a mapping of keys to values, got %s"
)

// decode decodes the node into v, recording every problem in the document
// and going on. A value with a Validator is validated once decoded. A value
// written as nothing leaves v as it is, unvalidated, unless v is a string
// (which takes the text as written). An enum (the field's `enum` tag)
// applies to the strings in v, in lists and maps too.
func (n Node) decode(v reflect.Value, enum string) {
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(n))
		return
	}
	if n.y == nil || isNull(n.y) && v.Kind() != reflect.String {
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		n.decode(v.Elem(), enum)
		return
	}
	if n.decodeValue(v, enum) {
		n.validate(v)
	}
}

// decodeValue decodes the node into v, which is no pointer, and reports
// whether v's Validator is due: for a value that decoded, and for a struct
// in any case. A duration or a size is never validated (they have no
// Validator).
func (n Node) decodeValue(v reflect.Value, enum string) bool {
	switch v.Type() {
	case durationType:
		n.decodeDuration(v)
		return false
	case byteSizeType:
		n.decodeByteSize(v)
		return false
	}
	switch v.Kind() {
	case reflect.Struct:
		n.decodeStruct(v)
		return true
	case reflect.Slice:
		return n.decodeSlice(v, enum)
	case reflect.Map:
		return n.decodeMap(v, enum)
	case reflect.String:
		return n.decodeString(v, enum)
	default:
		return n.decodeNumber(v)
	}
}

func (n Node) decodeDuration(v reflect.Value) {
	d, err := time.ParseDuration(n.scalar())
	if err != nil || d < 0 {
		n.Errorf("must be a duration like 500ms, 10s or 5m, got %q", n.Text())
		return
	}
	v.SetInt(int64(d))
}

func (n Node) decodeByteSize(v reflect.Value) {
	s, err := parseByteSize(n.scalar())
	if err != nil {
		n.Errorf("must be a size like 512KiB, 64MiB or 1GiB, got %q", n.Text())
		return
	}
	v.SetInt(int64(s))
}

// decodeSlice decodes a list, or a scalar into a []byte (as it is, not
// validated).
func (n Node) decodeSlice(v reflect.Value, enum string) bool {
	if v.Type().Elem().Kind() == reflect.Uint8 && n.y.Kind == yaml.ScalarNode {
		v.SetBytes([]byte(n.y.Value))
		return false
	}
	if n.y.Kind != yaml.SequenceNode {
		n.Errorf("must be a list, got %s", kindName(n.y))
		return false
	}
	s := reflect.MakeSlice(v.Type(), len(n.y.Content), len(n.y.Content))
	for i := range n.y.Content {
		n.Index(i).decode(s.Index(i), enum)
	}
	v.Set(s)
	return true
}

func (n Node) decodeMap(v reflect.Value, enum string) bool {
	if n.y.Kind != yaml.MappingNode {
		n.Errorf(errNotAMapping, kindName(n.y))
		return false
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("agent: config maps must have string keys")
	}
	m := reflect.MakeMap(v.Type())
	for _, k := range n.Keys() {
		e := reflect.New(v.Type().Elem()).Elem()
		n.Field(k).decode(e, enum)
		m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e)
	}
	v.Set(m)
	return true
}

func (n Node) decodeString(v reflect.Value, enum string) bool {
	if n.y.Kind != yaml.ScalarNode {
		n.Errorf("must be a string, got %s", kindName(n.y))
		return false
	}
	if enum != "" && !slices.Contains(strings.Split(enum, ","), n.y.Value) {
		n.Errorf("must be %s, got %q", orList(strings.Split(enum, ",")), n.Text())
		return false
	}
	v.SetString(n.y.Value)
	return true
}

// decodeNumber decodes a bool, an integer or a float; any other kind is a
// config type the decoder does not support, a programming error.
func (n Node) decodeNumber(v reflect.Value) bool {
	var err error
	switch v.Kind() {
	case reflect.Bool:
		var b bool
		if b, err = strconv.ParseBool(n.scalar()); err != nil {
			n.Errorf("must be true or false, got %q", n.Text())
			return false
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if i, err = strconv.ParseInt(n.scalar(), 0, v.Type().Bits()); err != nil {
			n.Errorf("must be an integer, got %q", n.Text())
			return false
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if u, err = strconv.ParseUint(n.scalar(), 0, v.Type().Bits()); err != nil {
			n.Errorf("must be a non-negative integer, got %q", n.Text())
			return false
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		var f float64
		if f, err = strconv.ParseFloat(n.scalar(), 64); err != nil {
			n.Errorf("must be a number, got %q", n.Text())
			return false
		}
		v.SetFloat(f)
	default:
		panic("agent: unsupported config type " + v.Type().String())
	}
	return true
}

func (n Node) validate(v reflect.Value) {
	if v.CanAddr() && v.Addr().Type().Implements(validatorType) {
		v.Addr().Interface().(Validator).Validate(n)
	}
}

// scalar returns the scalar value, or a marker that no parser accepts.
func (n Node) scalar() string {
	if n.y.Kind != yaml.ScalarNode {
		return "\x00" + kindName(n.y)
	}
	return n.y.Value
}

// structField is a config key and where it goes in the struct.
type structField struct {
	key   string
	index []int
	enum  string
	rule  fieldRule // required, min, max: conftags.go
}

func configFields(t reflect.Type) []structField {
	var out []structField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" || (f.Anonymous && tag == "") {
			for _, sf := range configFields(f.Type) {
				sf.index = append([]int{i}, sf.index...)
				out = append(out, sf)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, structField{key: name, index: []int{i}, enum: f.Tag.Get("enum"), rule: parseRule(f)})
	}
	return out
}

func (n Node) decodeStruct(v reflect.Value) {
	if n.y.Kind != yaml.MappingNode {
		n.Errorf(errNotAMapping, kindName(n.y))
		return
	}
	fields := configFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.y.Content); i += 2 {
		key := n.y.Content[i].Value
		child := n.Field(key)
		if seen[key] {
			child.Errorf("key appears twice")
			continue
		}
		seen[key] = true
		idx := slices.IndexFunc(fields, func(f structField) bool { return f.key == key })
		if idx < 0 {
			child = n.Key(key)
			keys := make([]string, len(fields))
			for j, f := range fields {
				keys[j] = f.key
			}
			sort.Strings(keys)
			child.Errorf("unknown key; expected one of: %s", strings.Join(keys, ", "))
			continue
		}
		fv, before := v.FieldByIndex(fields[idx].index), len(n.doc.errs)
		child.decode(fv, fields[idx].enum)
		if len(n.doc.errs) == before {
			fields[idx].rule.check(child, fv)
		}
	}
	checkAbsent(n, v, fields, seen)
}

func kindName(y *yaml.Node) string {
	switch y.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if y.Tag == "!!null" {
			return "nothing"
		}
		return strconv.Quote(y.Value)
	}
	return "an alias"
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func orList(alts []string) string {
	switch len(alts) {
	case 1:
		return alts[0]
	case 2:
		return alts[0] + " or " + alts[1]
	}
	return strings.Join(alts[:len(alts)-1], ", ") + " or " + alts[len(alts)-1]
}

// String writes the size as a config file would: in the largest binary unit
// that divides it (256MiB), else the largest decimal one (100MB), else in
// bytes (1500B). Decoding the config reads it back to the same value.
func (v ByteSize) String() string {
	for _, u := range []struct {
		name string
		size ByteSize
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
		if v != 0 && v%u.size == 0 {
			return strconv.FormatInt(int64(v/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(v), 10) + "B"
}

// parseByteSize parses a size in bytes: a plain number, or a number with one of
// the units B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
func parseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i:])
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
	if mult == 0 || num == "" {
		return 0, fmt.Errorf("config: bad size %q", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("config: bad size %q", s)
	}
	return ByteSize(f * mult), nil
}

// ParseConfig parses the YAML text of a config file and returns its root
// node. Aliases are expanded first, within a bound (a file that would expand
// beyond it, an "alias bomb", is refused); then, in every scalar, ${NAME}
// is replaced by the environment variable (lookupEnv; nil means
// os.LookupEnv) and ${file:/path} by the file's content. A problem found
// (invalid YAML, an empty file, a variable not set) is recorded like those
// found later while decoding and validating: see Node.Errors. The root is
// absent when the file could not be parsed. readFile is what Node.ReadFile
// reads with; nil means os.ReadFile.
func ParseConfig(file string, data []byte, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) Node {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	root, _ := parseDocument(file, data, lookupEnv)
	root.doc.readFile = readFile
	return root
}

// parseDocument parses YAML text into a document, substitutes ${ENV} and
// ${file:/path} in its scalars, and returns its root node.
func parseDocument(file string, data []byte, env func(string) (string, bool)) (Node, *document) {
	doc := &document{file: file, orig: map[*yaml.Node]string{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line := 0
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if l, tail, ok := strings.Cut(rest, ": "); ok {
				line, _ = strconv.Atoi(l)
				msg = tail
			}
		}
		doc.errs = append(doc.errs, &ConfigError{File: file, Line: line, Msg: "invalid YAML: " + msg})
		return Node{doc: doc}, doc
	}
	if len(root.Content) == 0 {
		doc.errs = append(doc.errs, &ConfigError{File: file, Line: 1, Msg: "file is empty"})
		return Node{doc: doc}, doc
	}
	if err := expandAliases(file, root.Content[0]); err != nil {
		doc.errs = append(doc.errs, err)
		return Node{doc: doc}, doc
	}
	n := Node{y: root.Content[0], doc: doc}
	doc.substitute(n, env)
	return n, doc
}

// substitute replaces ${NAME} by the environment variable and ${file:/path} by
// the file's content (without its trailing newline) in every scalar; `$${` is a
// literal `${`. The original text is kept for messages.
func (d *document) substitute(n Node, env func(string) (string, bool)) {
	y := n.y
	switch y.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(y.Content); i += 2 {
			d.substitute(n.Field(y.Content[i].Value), env)
		}
	case yaml.SequenceNode:
		for i := range y.Content {
			d.substitute(n.Index(i), env)
		}
	case yaml.ScalarNode:
		if !strings.Contains(y.Value, "${") {
			return
		}
		out, err := expandSecrets(y.Value, env)
		if err != nil {
			n.Errorf("%v", err)
			if d.unresolved == nil {
				d.unresolved = map[*yaml.Node]bool{}
			}
			d.unresolved[y] = true
			return
		}
		d.orig[y] = y.Value
		y.Value = out
	}
}

func expandSecrets(s string, env func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s)
		}
		ref := s[i+2 : i+end]
		s = s[i+end+1:]
		if path, ok := strings.CutPrefix(ref, "file:"); ok {
			data, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("secret file %q: %w", path, err)
			}
			b.WriteString(strings.TrimRight(string(data), "\r\n"))
			continue
		}
		v, ok := env(ref)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", ref)
		}
		b.WriteString(v)
	}
}
