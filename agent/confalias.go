package agent

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// maxExpandedValues bounds the values (scalars, lists, mappings) a config
// file may hold once its aliases are expanded. A pipeline file has a few
// hundred; a file of anchors that each repeat the one before ("billion
// laughs") reaches billions from a few lines, and must be refused before
// anything walks it.
const maxExpandedValues = 100_000

// expandAliases replaces every alias below root with a copy of its anchor's
// value, so that everything that reads the tree afterwards (decoding,
// ${...} substitution, fingerprints) sees plain values and never follows an
// alias itself. The size of the expansion is computed first, in time
// proportional to the file: a file that would expand beyond
// maxExpandedValues, or an anchor that contains an alias to itself, is an
// error at the line of the alias responsible.
func expandAliases(file string, root *yaml.Node) *ConfigError {
	sizes := map[*yaml.Node]int{}
	var cyclic *yaml.Node
	var size func(y *yaml.Node) int
	size = func(y *yaml.Node) int {
		if y.Kind == yaml.AliasNode {
			if y.Alias == nil {
				return 1
			}
			return size(y.Alias)
		}
		if n, ok := sizes[y]; ok {
			if n < 0 && cyclic == nil {
				cyclic = y
			}
			return max(n, 0)
		}
		sizes[y] = -1 // being sized: meeting it again is a cycle
		n := 1
		for _, c := range y.Content {
			n = min(n+size(c), maxExpandedValues+1)
		}
		sizes[y] = n
		return n
	}
	if size(root) <= maxExpandedValues && cyclic == nil {
		expand(root)
		return nil
	}
	if cyclic != nil {
		return &ConfigError{File: file, Line: cyclic.Line, Msg: fmt.Sprintf("anchor &%s contains an alias to itself", cyclic.Anchor)}
	}
	// Point at the alias that holds most of the expansion: go down the
	// largest value until an alias.
	y := root
	for y.Kind != yaml.AliasNode {
		var next *yaml.Node
		for _, c := range y.Content {
			if next == nil || size(c) > size(next) {
				next = c
			}
		}
		if next == nil {
			break
		}
		y = next
	}
	name := ""
	if y.Kind == yaml.AliasNode {
		name = " (at *" + y.Value + ")"
	}
	return &ConfigError{File: file, Line: y.Line, Msg: fmt.Sprintf("aliases expand the file to more than %d values%s; write the values out or use fewer aliases", maxExpandedValues, name)}
}

// expand replaces the aliases below y with copies of their values.
func expand(y *yaml.Node) {
	for i, c := range y.Content {
		if c.Kind == yaml.AliasNode && c.Alias != nil {
			y.Content[i] = deepCopy(c.Alias)
			continue
		}
		expand(c)
	}
}

// deepCopy copies y and everything below it, expanding aliases. The copies
// keep the lines of the anchored value, where a problem in them is written.
func deepCopy(y *yaml.Node) *yaml.Node {
	if y.Kind == yaml.AliasNode && y.Alias != nil {
		return deepCopy(y.Alias)
	}
	cp := *y
	cp.Anchor = ""
	if len(y.Content) > 0 {
		cp.Content = make([]*yaml.Node, len(y.Content))
		for i, c := range y.Content {
			cp.Content[i] = deepCopy(c)
		}
	}
	return &cp
}
