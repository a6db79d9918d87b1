package main

import (
	"net"
	"os"
)

// sdNotify tells systemd the service's state ("READY=1", "STOPPING=1",
// ...) when it started Portico as a Type=notify service, which it says by
// setting NOTIFY_SOCKET; otherwise it does nothing. The protocol is one
// datagram per message on that unix socket, so no library is needed.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	// Go maps a leading "@" to Linux's abstract socket namespace, as
	// systemd means it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte(state))
}
