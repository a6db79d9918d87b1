package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ConnLimit caps the client connections open on the listeners it is given
// to: in all (max_conns) and per client address (max_conns_per_ip). A
// connection over either cap is closed as soon as it is accepted, before a
// byte of it is read, and counted; a line is logged at most once a second,
// so that a flood of connections cannot become a flood of log lines. One
// ConnLimit shared by the HTTP and HTTPS listeners counts a client's
// connections on both together. Connections are counted whether or not a
// cap is set, so that caps set by a reload apply to exact counts.
type ConnLimit struct {
	max, perIP atomic.Int64 // 0: off
	log        *slog.Logger

	mu    sync.Mutex
	open  int
	byIP  map[netip.Addr]int // entries leave at zero
	total atomic.Uint64      // refused over max
	ip    atomic.Uint64      // refused over perIP
	last  atomic.Int64       // unix ns of the last log line
}

// NewConnLimit returns a ConnLimit without caps; SetLimits sets them.
func NewConnLimit(log *slog.Logger) *ConnLimit {
	return &ConnLimit{log: log, byIP: map[netip.Addr]int{}}
}

// SetLimits sets both caps (0: off) for the connections accepted from now
// on; those open stay.
func (c *ConnLimit) SetLimits(maxConns, maxPerIP int) {
	c.max.Store(int64(maxConns))
	c.perIP.Store(int64(maxPerIP))
}

// Listener returns ln with each accepted connection admitted under the caps.
func (c *ConnLimit) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, c: c}
}

// Refused returns how many connections were closed at accept since start,
// over max_conns and over max_conns_per_ip; metrics read it at scrape time.
func (c *ConnLimit) Refused() (overTotal, overPerIP uint64) {
	return c.total.Load(), c.ip.Load()
}

// admit returns conn, counted until it closes, or closes it and returns nil
// when it is over a cap.
func (c *ConnLimit) admit(conn net.Conn) net.Conn {
	ip := remoteIP(conn)
	c.mu.Lock()
	overTotal := c.max.Load() > 0 && int64(c.open) >= c.max.Load()
	overPerIP := !overTotal && c.perIP.Load() > 0 && int64(c.byIP[ip]) >= c.perIP.Load()
	if !overTotal && !overPerIP {
		c.open++
		c.byIP[ip]++
	}
	c.mu.Unlock()
	if overTotal || overPerIP {
		c.refused(ip, overPerIP) // counted before the client can see the close
		_ = conn.Close()
		return nil
	}
	return &limitConn{Conn: conn, c: c, ip: ip}
}

func (c *ConnLimit) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if n := c.byIP[ip] - 1; n > 0 {
		c.byIP[ip] = n
	} else {
		delete(c.byIP, ip)
	}
}

func (c *ConnLimit) refused(ip netip.Addr, overPerIP bool) {
	if overPerIP {
		c.ip.Add(1)
	} else {
		c.total.Add(1)
	}
	now, last := time.Now().UnixNano(), c.last.Load()
	if now-last < int64(time.Second) || !c.last.CompareAndSwap(last, now) {
		return
	}
	total, perIP := c.Refused()
	c.log.Warn("client connections refused at accept", "client", ip.String(), "over_max_conns_per_ip", overPerIP,
		"max_conns", c.max.Load(), "max_conns_per_ip", c.perIP.Load(), "refused_over_max_conns", total, "refused_over_max_conns_per_ip", perIP)
}

type limitListener struct {
	net.Listener
	c *ConnLimit
}

// Accept returns the next connection within the caps; those over them are
// closed here and never reach the server.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if conn = l.c.admit(conn); conn != nil {
			return conn, nil
		}
	}
}

// remoteIP is the peer's address; all peers without one share the zero Addr.
func remoteIP(conn net.Conn) netip.Addr {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return ap.Addr().Unmap()
}

type limitConn struct {
	net.Conn
	c      *ConnLimit
	ip     netip.Addr
	closed atomic.Bool
}

// Close frees the connection's place once, however often it is called.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.c.release(c.ip)
	}
	return err
}

// CloseWrite lets net/http half-close before closing, as it does on a bare
// TCP connection, so that a client reads the last response before the close.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
