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
	"github.com/portico/portico/proxy/h1"
)

// Backend connections, by the pool's scheme:
//
//   - http: package h1's pools, one per backend.
//   - https: TLS. The h1 pools offer h2 and http/1.1 in ALPN; a backend that
//     picks h2 is reached through net/http's HTTP/2 transport from then on.
//     Upgrades (WebSocket) cannot run over HTTP/2, so they have their own
//     pools offering only http/1.1.
//   - h2c: net/http's transport, cleartext HTTP/2 with prior knowledge, what
//     gRPC servers speak.
//
// Every dial, TCP or TLS, fails with a dialError, which is what tells the
// retry logic that the request never left.

// Idle backend connections are closed after this long unused.
const backendIdleTimeout = 90 * time.Second

// errSpeaksH2: an https backend chose HTTP/2; the request goes to the
// HTTP/2 transport instead, nothing having been sent.
var errSpeaksH2 = errors.New("backend chose HTTP/2")

func (u *upstream) connect(pc *config.Pool) {
	dial := tcpDialer(pc.DialTimeout.Duration)
	opts := h1.Options{MaxIdle: pc.MaxIdleConnsPerBackend, IdleTimeout: backendIdleTimeout}
	backends := u.pool.Backends()
	pools := func(dial dialFunc) []*h1.Pool {
		ps := make([]*h1.Pool, len(backends))
		for i, b := range backends {
			addr := b.URL().Host
			ps[i] = h1.NewPool(func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", addr) }, opts)
		}
		return ps
	}
	switch pc.Scheme {
	case config.SchemeH2C:
		t := httpTransport(pc, dial)
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
		u.rt, u.rtScheme = t, "http"
	case config.SchemeHTTPS:
		cfg := backendTLSConfig(pc)
		t := httpTransport(pc, dial)
		t.DialTLSContext = tlsDialer(dial, cfg, []string{"h2", "http/1.1"}, pc.DialTimeout.Duration)
		t.ForceAttemptHTTP2 = true // a custom TLS dialer turns HTTP/2 off unless forced
		u.rt, u.rtScheme = t, "https"
		u.h1 = pools(h1Only(tlsDialer(dial, cfg, []string{"h2", "http/1.1"}, pc.DialTimeout.Duration)))
		u.h1Only = pools(tlsDialer(dial, cfg, []string{"http/1.1"}, pc.DialTimeout.Duration))
		u.h2 = make([]atomic.Bool, len(backends))
	default:
		u.h1 = pools(dial)
	}
}

// httpTransport is net/http's transport for HTTP/2 backends.
func httpTransport(pc *config.Pool, dial dialFunc) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never route backend traffic through $HTTP_PROXY
		DialContext:           dial,
		MaxIdleConnsPerHost:   pc.MaxIdleConnsPerBackend,
		IdleConnTimeout:       backendIdleTimeout,
		ResponseHeaderTimeout: pc.ResponseHeaderTimeout.Duration,
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

func tcpDialer(timeout time.Duration) dialFunc {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, dialError{err}
		}
		return c, nil
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
