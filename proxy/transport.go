package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/connset"
	"github.com/portico/portico/proxy/h1"
)

// transports is how Portico reaches one backend, by its pool's scheme:
//
//   - http: package h1's pool of HTTP/1.1 connections.
//   - https: TLS. The h1 pool offers h2 and http/1.1 in ALPN; once the
//     backend picks h2 it is reached through net/http's HTTP/2 transport.
//     Upgrades (WebSocket) cannot run over HTTP/2, so they have their own
//     pool offering only http/1.1.
//   - h2c: net/http's transport, cleartext HTTP/2 with prior knowledge, what
//     gRPC servers speak.
//
// Every dial, TCP or TLS, fails with a dialError, which is what tells the
// retry logic that the request never left.
//
// Each backend has its own, so that a reload keeps an unchanged backend's
// idle connections and can close a removed backend's without touching the
// others'. Every connection they dial is tracked until it closes, upgraded
// (WebSocket) ones included, so that a removed backend's last streams can be
// cut when its drain time is up.
type transports struct {
	h1, h1Only *h1.Pool // nil for h2c; h1Only for https only
	h2         atomic.Bool
	rt         *http.Transport // h2c, and https backends that chose h2; nil for http
	scheme     string          // the scheme rt expects in request URLs
	conns      *connSet
}

// Idle backend connections are closed after this long unused.
const backendIdleTimeout = 90 * time.Second

// errSpeaksH2: an https backend chose HTTP/2; the request goes to the
// HTTP/2 transport instead, nothing having been sent.
var errSpeaksH2 = errors.New("backend chose HTTP/2")

// newTransports returns the transports to the backend at addr (host:port).
func newTransports(pc *config.Pool, addr string) *transports {
	conns := new(connSet)
	dial := tcpDialer(pc.DialTimeout.Duration, conns)
	opts := h1.Options{MaxIdle: pc.MaxIdleConnsPerBackend, IdleTimeout: backendIdleTimeout, MaxHeaderBytes: pc.MaxResponseHeaderBytes}
	pool := func(dial dialFunc) *h1.Pool {
		return h1.NewPool(func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", addr) }, opts)
	}
	ts := &transports{scheme: "http", conns: conns}
	switch pc.Scheme {
	case config.SchemeH2C:
		ts.rt = httpTransport(pc, dial)
		ts.rt.Protocols = new(http.Protocols)
		ts.rt.Protocols.SetUnencryptedHTTP2(true)
	case config.SchemeHTTPS:
		cfg := backendTLSConfig(pc)
		ts.rt = httpTransport(pc, dial)
		ts.rt.DialTLSContext = tlsDialer(dial, cfg, []string{"h2", "http/1.1"}, pc.DialTimeout.Duration)
		ts.rt.ForceAttemptHTTP2 = true // a custom TLS dialer turns HTTP/2 off unless forced
		ts.scheme = "https"
		ts.h1 = pool(h1Only(tlsDialer(dial, cfg, []string{"h2", "http/1.1"}, pc.DialTimeout.Duration)))
		ts.h1Only = pool(tlsDialer(dial, cfg, []string{"http/1.1"}, pc.DialTimeout.Duration))
	default:
		ts.h1 = pool(dial)
	}
	return ts
}

// h1Pool returns the HTTP/1.1 connections to the backend, or nil when it
// is reached over HTTP/2.
func (ts *transports) h1Pool(upgrade bool) *h1.Pool {
	switch {
	case ts.h1 == nil:
		return nil
	case upgrade && ts.h1Only != nil:
		return ts.h1Only
	case ts.h2.Load():
		return nil
	}
	return ts.h1
}

// sameTransport reports whether two pool configurations reach their
// backends alike, so that a reload may keep the backends' connections. Every
// key that changes how connections are made or used belongs here (the test
// TestEveryPoolKeyIsClassified keeps that list complete).
func sameTransport(a, b *config.Pool) bool {
	return a.Scheme == b.Scheme &&
		a.DialTimeout.Duration == b.DialTimeout.Duration &&
		a.ResponseHeaderTimeout.Duration == b.ResponseHeaderTimeout.Duration &&
		a.MaxIdleConnsPerBackend == b.MaxIdleConnsPerBackend &&
		a.MaxResponseHeaderBytes == b.MaxResponseHeaderBytes &&
		a.TLSServerName == b.TLSServerName &&
		a.TLSInsecureSkipVerify == b.TLSInsecureSkipVerify &&
		a.TLSCAFile == b.TLSCAFile && a.RootCAs.Equal(b.RootCAs)
}

// closeIdle closes the idle connections, and those in use once their
// exchange ends: the transports are no longer used for new requests.
func (ts *transports) closeIdle() {
	for _, p := range [...]*h1.Pool{ts.h1, ts.h1Only} {
		if p != nil {
			p.Close()
		}
	}
	if ts.rt != nil {
		ts.rt.CloseIdleConnections()
	}
}

// cut closes every connection the transports dialed, busy or idle,
// upgraded or not, and fails any later dial: the backend is gone.
func (ts *transports) cut() {
	ts.closeIdle()
	closeAll(ts.conns)
}

// errBackendRemoved fails a dial to a backend whose drain time is over; it
// is a dialError, so the request goes to another backend.
var errBackendRemoved = errors.New("backend removed from the configuration")

// connSet is the connections of one backend's transports that are open.
type connSet = connset.Set[*trackedConn]

// closeAll closes every connection in s and has it refuse new ones.
func closeAll(s *connSet) {
	s.Seal()
	s.Range(func(c *trackedConn) { _ = c.Conn.Close() })
}

// trackedConn leaves its set when it closes.
type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.Remove(c)
	return c.Conn.Close()
}

// NetConn is the connection underneath, for package h1's idle check.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// CloseWrite passes a half-close on, which upgraded connections need.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// httpTransport is net/http's transport for HTTP/2 backends.
func httpTransport(pc *config.Pool, dial dialFunc) *http.Transport {
	return &http.Transport{
		Proxy:                  nil, // never route backend traffic through $HTTP_PROXY
		DialContext:            dial,
		MaxIdleConnsPerHost:    pc.MaxIdleConnsPerBackend,
		IdleConnTimeout:        backendIdleTimeout,
		ResponseHeaderTimeout:  pc.ResponseHeaderTimeout.Duration,
		MaxResponseHeaderBytes: int64(pc.MaxResponseHeaderBytes),
		// Non-zero, so a client's "Expect: 100-continue" waits for the backend's
		// answer instead of sending the body at once.
		ExpectContinueTimeout: continueTimeout,
		// A proxy passes encodings through; it must not add gzip and decode it.
		DisableCompression: true,
	}
}

// h1Only turns a TLS connection on which the backend chose h2 into
// errSpeaksH2.
func h1Only(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			_ = c.Close()
			return nil, errSpeaksH2
		}
		return c, nil
	}
}

func backendTLSConfig(pc *config.Pool) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         pc.TLSServerName,
		RootCAs:            pc.RootCAs,
		InsecureSkipVerify: pc.TLSInsecureSkipVerify, //nolint:gosec // the operator asked for it, per pool
		// Resumed sessions make reconnecting to a backend cheap.
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
	}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func tcpDialer(timeout time.Duration, conns *connSet) dialFunc {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, dialError{err}
		}
		tc := &trackedConn{Conn: c, set: conns}
		if !conns.Add(tc) {
			_ = c.Close()
			return nil, dialError{errBackendRemoved}
		}
		return tc, nil
	}
}

// tlsDialer connects and completes the TLS handshake within timeout. A
// failed handshake is a dialError too: no request was written.
func tlsDialer(dial dialFunc, base *tls.Config, protos []string, timeout time.Duration) dialFunc {
	base = base.Clone()
	base.NextProtos = protos
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := base
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg = base.Clone() // once per new connection; the session cache is shared
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, dialError{err}
		}
		return tc, nil
	}
}
