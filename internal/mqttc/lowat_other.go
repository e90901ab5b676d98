//go:build !linux

package mqttc

import "net"

// lowat does nothing outside Linux: there every message that arrives
// during a pause wakes the poller.
type lowat struct{}

func newLowat(net.Conn) lowat { return lowat{} }

func (lowat) set(int) {}

func (lowat) canWait() bool { return false }

func (lowat) waitQueued(int) error { return nil }
