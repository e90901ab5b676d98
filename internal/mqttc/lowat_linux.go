package mqttc

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// lowat sets a TCP connection's receive low-water mark (SO_RCVLOWAT): its
// readiness, and the kernel's wake-ups of whoever polls it, wait for n
// bytes. A non-blocking read still returns what is there. It does nothing
// for a connection that is not a socket.
type lowat struct{ rc syscall.RawConn }

func newLowat(c net.Conn) lowat {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return lowat{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return lowat{}
	}
	return lowat{rc: rc}
}

func (l lowat) set(n int) {
	if l.rc == nil {
		return
	}
	// An error leaves the mark as it was: a pause then costs a wake-up per
	// message, as without it.
	_ = l.rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	})
}

// canWait reports whether waitQueued can wait on the socket.
func (l lowat) canWait() bool { return l.rc != nil }

// waitQueued waits until the socket holds at least n unread bytes, or its
// read deadline passes, or it is closed. The wait is the runtime's
// network poller's, which the kernel wakes once the low-water mark (set
// to n) is reached, or below it when its receive buffer or window runs
// short; the bytes queued (SIOCINQ) tell the two apart.
func (l lowat) waitQueued(n int) error {
	return l.rc.Read(func(fd uintptr) bool {
		q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		return err != nil || q >= n
	})
}
