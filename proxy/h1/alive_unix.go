//go:build unix

package h1

import (
	"net"
	"syscall"
)

// rawSocket returns the socket under nc for alive, or nil. It looks
// through TLS and through wrappers that offer NetConn, as tls.Conn does.
func rawSocket(nc net.Conn) syscall.RawConn {
	for range 4 {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// alive peeks at an idle connection without blocking: nothing to read
// means the backend still holds it open. An end of stream, a reset, or
// bytes the backend sent unasked (a TLS alert, a stray response) all mean
// it must not be reused. Control, unlike Read, ignores deadlines, which an
// idle connection may still carry from its last exchange.
func (c *Conn) alive() bool {
	if c.sock == nil {
		return true
	}
	var b [1]byte
	alive := false
	err := c.sock.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	})
	return err == nil && alive
}
