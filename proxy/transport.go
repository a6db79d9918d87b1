package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portico/portico/config"
)

// transports is how one pool reaches its backends, by scheme:
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
type transports struct {
	main    *http.Transport
	upgrade *http.Transport // https only; nil otherwise
	scheme  string          // the scheme main and upgrade expect in request URLs
}

// Idle backend connections are closed after this long unused.
const backendIdleTimeout = 90 * time.Second

func newTransports(pc *config.Pool) *transports {
	dial := tcpDialer(pc.DialTimeout.Duration)
	base := func() *http.Transport {
		return &http.Transport{
			Proxy:                 nil, // never route backend traffic through $HTTP_PROXY
			DialContext:           dial,
			MaxIdleConnsPerHost:   pc.MaxIdleConnsPerBackend,
			IdleConnTimeout:       backendIdleTimeout,
			ResponseHeaderTimeout: pc.ResponseHeaderTimeout.Duration,
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
		return &transports{main: main, upgrade: upgrade, scheme: "https"}
	case config.SchemeH2C:
		t := base()
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
		return &transports{main: t, scheme: "http"}
	}
	return &transports{main: base(), scheme: "http"}
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
