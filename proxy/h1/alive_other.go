//go:build !unix

package h1

import (
	"net"
	"syscall"
)

func rawSocket(net.Conn) syscall.RawConn { return nil }

// alive cannot peek here; a stale connection shows up as ErrNoResponse.
func (c *Conn) alive() bool { return true }
