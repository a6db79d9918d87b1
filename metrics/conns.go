package metrics

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Connection protocols, as labels; a connection's protocol is known at its
// first request (HTTP/1.x) or when HTTP/2 takes it over (ALPN "h2", or the
// h2c preface). One upgraded by "Upgrade: h2c" stays counted as h1.
const (
	protoH1 = 1 + iota
	protoH2
)

var protocols = [...]string{protoH1: "h1", protoH2: "h2"}

// TrackConns counts the client connections srv accepts from ln by protocol
// and, on a TLS listener, the handshakes by result. ln is the plain TCP
// listener (TLS goes on top of the one returned); call it once srv is
// configured for HTTP/2 and before it serves. It costs a type assertion
// and an atomic load per request, nothing per byte.
func (m *Metrics) TrackConns(listener string, srv *http.Server, ln net.Listener) net.Listener {
	if m == nil {
		return ln
	}
	l := &connListener{Listener: ln, ok: m.handshakes.WithLabelValues("ok"), failed: m.handshakes.WithLabelValues("failed")}
	for p := protoH1; p <= protoH2; p++ {
		l.open[p] = m.connsOpen.WithLabelValues(listener, protocols[p])
		l.total[p] = m.connsTotal.WithLabelValues(listener, protocols[p])
	}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		l.connState(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	// net/http runs no ConnState hook when HTTP/2 takes a connection over;
	// the hand-over functions are where it happens.
	for key, tlsHandshake := range map[string]bool{"h2": true, "unencrypted_http2": false} {
		next := srv.TLSNextProto[key]
		if next == nil {
			continue
		}
		srv.TLSNextProto[key] = func(s *http.Server, c *tls.Conn, h http.Handler) {
			if tc := tracked(c); tc != nil {
				l.serving(tc, protoH2, tlsHandshake)
			}
			next(s, c, h)
		}
	}
	return l
}

type connListener struct {
	net.Listener
	open       [len(protocols)]prometheus.Gauge
	total      [len(protocols)]prometheus.Counter
	ok, failed prometheus.Counter
}

func (l *connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, l: l}, nil
}

func (l *connListener) connState(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateActive:
		// Every request of an HTTP/1 connection passes here; only the
		// first finds the protocol unset.
		if tc := tracked(c); tc != nil && tc.state.Load() == 0 {
			_, isTLS := c.(*tls.Conn)
			l.serving(tc, protoH1, isTLS)
		}
	case http.StateClosed:
		// A TLS connection that never served a request: the handshake
		// failed, or the client left right after it.
		tc := tracked(c)
		conn, isTLS := c.(*tls.Conn)
		if tc != nil && isTLS && tc.state.Load()&protoMask == 0 {
			if conn.ConnectionState().HandshakeComplete {
				l.ok.Inc()
			} else {
				l.failed.Inc()
			}
		}
	}
}

// serving records the protocol of a connection that starts serving.
func (l *connListener) serving(tc *trackedConn, proto int32, tlsHandshake bool) {
	if !tc.state.CompareAndSwap(0, proto) {
		return // already known, or closed
	}
	l.open[proto].Inc()
	l.total[proto].Inc()
	if tlsHandshake {
		l.ok.Inc()
	}
}

const (
	protoMask  = 0xff
	closedFlag = 0x100
)

// trackedConn holds its protocol and whether it closed in one word, so that
// a close racing the protocol's discovery is counted exactly once.
type trackedConn struct {
	net.Conn
	l     *connListener
	state atomic.Int32
}

func (c *trackedConn) Close() error {
	for {
		s := c.state.Load()
		if s&closedFlag != 0 {
			break
		}
		if c.state.CompareAndSwap(s, s|closedFlag) {
			if p := s & protoMask; p != 0 {
				c.l.open[p].Dec()
			}
			break
		}
	}
	return c.Conn.Close()
}

// CloseWrite passes a half-close on (WebSocket tunnels use it).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return http.ErrNotSupported
}

// tracked finds the trackedConn under c: c itself, under TLS, or under
// net/http's stand-in TLS connection for cleartext HTTP/2.
func tracked(c net.Conn) *trackedConn {
	for range 4 {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		case interface{ UnencryptedNetConn() net.Conn }:
			c = v.UnencryptedNetConn()
		case interface{ NetConn() net.Conn }:
			c = v.NetConn() // a cleartext HTTP/2 connection replaying the bytes read past its preface
		default:
			return nil
		}
	}
	return nil
}
