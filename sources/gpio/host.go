package gpio

import (
	"errors"
	"fmt"
	"strings"

	"periph.io/x/conn/v3/driver/driverreg"
	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3/gpioioctl"
)

// lookupHost finds a pin through periph's gpioioctl driver, the Linux GPIO
// character device, the only host driver linked in: periph's host package
// would add its sysfs and netlink drivers and, on ARM, the memory-mapped
// Allwinner, BCM283x, Pine64 and Raspberry Pi drivers (0.59 MB of the
// arm64 binary, 0.16 MB on amd64), which this source does not use and
// which, on a Raspberry Pi, could register a line name such as GPIO17
// before gpioioctl does. driverreg.Init scans the GPIO chips
// (/dev/gpiochip*) once per process: a chip that appears later (a gpio-sim
// chip made after start) is not seen until the agent restarts.
func lookupHost(p PinConfig) (pgpio.PinIO, error) {
	if _, err := driverreg.Init(); err != nil {
		return nil, fmt.Errorf("periph host init: %w", err)
	}
	if p.Name != "" {
		if pin := gpioreg.ByName(p.Name); pin != nil {
			return pin, nil
		}
		return nil, fmt.Errorf("no GPIO line named %q (known: %s)", p.Name, knownLines())
	}
	for _, c := range gpioioctl.Chips {
		if c.Name() == p.Chip || c.Label() == p.Chip {
			if l := c.ByNumber(p.Line); l != nil {
				return l, nil
			}
			return nil, fmt.Errorf("chip %s has no line %d (it has %d)", p.Chip, p.Line, c.LineCount())
		}
	}
	return nil, errors.New("no GPIO chip " + p.Chip + " (known: " + knownChips() + ")")
}

func knownChips() string {
	var names []string
	for _, c := range gpioioctl.Chips {
		names = append(names, c.Name()+" ("+c.Label()+")")
	}
	if len(names) == 0 {
		return "none: no /dev/gpiochip* device"
	}
	return strings.Join(names, ", ")
}

func knownLines() string {
	var names []string
	for _, p := range gpioreg.All() {
		names = append(names, p.Name())
		if len(names) == 20 {
			names = append(names, "...")
			break
		}
	}
	if len(names) == 0 {
		return "none: no /dev/gpiochip* device"
	}
	return strings.Join(names, ", ")
}
