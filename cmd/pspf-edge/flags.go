package main

import (
	"flag"
	"strings"
)

// parseFlags parses args with fs, flags and positional arguments in any
// order, so that both `topology FILE --format dot` and
// `topology --format dot FILE` work; fs.Args() are then the positional
// arguments. A flag takes the next argument as its value unless it is
// written -name=value, fs defines it as a boolean (its Value has
// IsBoolFlag), or fs does not define it (Parse then reports it). A valued
// flag at the end of args is an error, `flag needs an argument`, as with
// fs.Parse. Everything after "--", and a lone "-", stays positional, in
// order.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if strings.Contains(name, "=") || i+1 == len(args) {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		flags = append(flags, args[i+1])
		i++
	}
	// The flags alone first: a valued flag left without its value is then
	// the last argument, which Parse reports.
	if err := fs.Parse(flags); err != nil {
		return err
	}
	// Then the positional arguments, behind "--" so that one starting with
	// "-" is not taken for a flag.
	return fs.Parse(append([]string{"--"}, pos...))
}
