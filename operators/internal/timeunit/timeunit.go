// Package timeunit holds the units of the numeric times the operators read
// (decode's and map's time_format, window's time_unit), so that they are
// written once: how many nanoseconds one unit of a Unix time is.
package timeunit

import "strings"

// Nanos returns how many nanoseconds one unit is, for the units s, ms, us
// and ns; ok is false for any other name.
func Nanos(unit string) (nanos int64, ok bool) {
	switch unit {
	case "s":
		return 1e9, true
	case "ms":
		return 1e6, true
	case "us":
		return 1e3, true
	case "ns":
		return 1, true
	}
	return 0, false
}

// UnixNanos returns Nanos of the unit of a time format that counts units
// since the Unix epoch: unix_s, unix_ms, unix_us or unix_ns; ok is false for
// any other format.
func UnixNanos(format string) (nanos int64, ok bool) {
	unit, ok := strings.CutPrefix(format, "unix_")
	if !ok {
		return 0, false
	}
	return Nanos(unit)
}
