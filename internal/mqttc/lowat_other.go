//go:build !linux

package mqttc

import "net"

// pauseLowat is unused where SO_RCVLOWAT does not hold back the poller's
// wake-ups: every message that arrives during a pause wakes it.
const pauseLowat = 1

// lowat does nothing outside Linux.
type lowat struct{}

func newLowat(net.Conn) lowat { return lowat{} }

func (lowat) set(int) {}
