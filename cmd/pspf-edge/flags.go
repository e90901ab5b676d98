package main

import (
	"flag"
	"strings"
)

// reorder moves the flags in args in front of the positional arguments, so
// that both `topology FILE --format dot` and `topology --format dot FILE`
// parse. A flag takes the next argument as its value unless it is written
// -name=value, fs defines it as a boolean (its Value has IsBoolFlag), or fs
// does not define it (Parse then reports it). Everything after "--", and a
// lone "-", stays positional, in order.
func reorder(fs *flag.FlagSet, args []string) []string {
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
	// "--" keeps a positional argument that starts with "-" from being
	// taken for a flag.
	return append(append(flags, "--"), pos...)
}
