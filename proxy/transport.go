package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portico/portico/config"
)

// transports is how Portico reaches one backend, by its pool's scheme:
//
//   - http: HTTP/1.1 with keep-alive.
//   - https: TLS, HTTP/2 when the backend offers it in ALPN, else HTTP/1.1.
//     Upgrades (WebSocket) cannot run over HTTP/2, and a transport cannot be
//     told per request what to offer in ALPN, so they get their own
//     HTTP/1.1-only transport.
//   - h2c: cleartext HTTP/2 with prior knowledge, what gRPC servers speak.
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
	main    *http.Transport
	upgrade *http.Transport // https only; nil otherwise
	scheme  string          // the scheme main and upgrade expect in request URLs
	conns   *connSet
}

// Idle backend connections are closed after this long unused.
const backendIdleTimeout = 90 * time.Second

func newTransports(pc *config.Pool) *transports {
	conns := &connSet{open: map[*trackedConn]struct{}{}}
	dial := tcpDialer(pc.DialTimeout.Duration, conns)
	base := func() *http.Transport {
		return &http.Transport{
			Proxy:                  nil, // never route backend traffic through $HTTP_PROXY
			DialContext:            dial,
			MaxIdleConnsPerHost:    pc.MaxIdleConnsPerBackend,
			IdleConnTimeout:        backendIdleTimeout,
			ResponseHeaderTimeout:  pc.ResponseHeaderTimeout.Duration,
			MaxResponseHeaderBytes: int64(pc.MaxResponseHeaderBytes),
			// Non-zero, so a client's "Expect: 100-continue" waits for the backend's
			// answer instead of sending the body at once.
			ExpectContinueTimeout: time.Second,
			// A proxy passes encodings through; it must not add gzip and decode it.
			DisableCompression: true,
		}
	}
	switch pc.Scheme {
	case config.SchemeHTTPS:
		cfg := backendTLSConfig(pc)
		main := base()
		main.DialTLSContext = tlsDialer(dial, cfg, []string{"h2", "http/1.1"}, pc.DialTimeout.Duration)
		main.ForceAttemptHTTP2 = true // a custom TLS dialer turns HTTP/2 off unless forced
		upgrade := base()
		upgrade.DialTLSContext = tlsDialer(dial, cfg, []string{"http/1.1"}, pc.DialTimeout.Duration)
		return &transports{main: main, upgrade: upgrade, scheme: "https", conns: conns}
	case config.SchemeH2C:
		t := base()
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
		return &transports{main: t, scheme: "http", conns: conns}
	}
	return &transports{main: base(), scheme: "http", conns: conns}
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

// forRequest picks the transport for one outbound request.
func (ts *transports) forRequest(req *http.Request) *http.Transport {
	if ts.upgrade != nil && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "upgrade") {
		return ts.upgrade
	}
	return ts.main
}

func (ts *transports) closeIdle() {
	ts.main.CloseIdleConnections()
	if ts.upgrade != nil {
		ts.upgrade.CloseIdleConnections()
	}
}

// cut closes every connection the transports dialed, busy or idle,
// upgraded or not, and fails any later dial: the backend is gone.
func (ts *transports) cut() {
	ts.closeIdle()
	ts.conns.closeAll()
}

// errBackendRemoved fails a dial to a backend whose drain time is over; it
// is a dialError, so the request goes to another backend.
var errBackendRemoved = errors.New("backend removed from the configuration")

// connSet is the connections of one backend's transports that are open.
type connSet struct {
	mu     sync.Mutex
	open   map[*trackedConn]struct{}
	closed bool
}

func (s *connSet) add(c *trackedConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[c] = struct{}{}
	return true
}

func (s *connSet) remove(c *trackedConn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	open := s.open
	s.open = nil
	s.mu.Unlock()
	for c := range open {
		_ = c.Conn.Close()
	}
}

// trackedConn leaves its set when it closes.
type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.remove(c)
	return c.Conn.Close()
}

// CloseWrite passes a half-close on, which upgraded connections need.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
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
		if !conns.add(tc) {
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
