//go:build !unix

package proxy

import "net"

// backlogged cannot look into the accept queue here: closing a listener may
// reset connections the kernel had completed.
func backlogged(*net.TCPListener) bool { return false }
