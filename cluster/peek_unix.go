//go:build unix

package cluster

import (
	"net"
	"syscall"
)

// peerClosed tells whether the far end of an idle connection has hung up
// (or sent bytes nobody asked for), by a non-blocking peek: it reads
// nothing. A connection that cannot be peeked counts as open.
func peerClosed(c net.Conn) bool {
	if t, ok := c.(*trackedConn); ok {
		c = t.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true // closed on this side
	}
	closed := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n > 0 || err == nil || (err != syscall.EAGAIN && err != syscall.EINTR)
		return true
	})
	return closed || err != nil
}
