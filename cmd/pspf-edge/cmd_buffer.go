package main

import (
	"fmt"
	"io"
)

func cmdBuffer(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "Usage: pspf-edge buffer inspect|verify|dump DIR")
	return exitUsage
}
