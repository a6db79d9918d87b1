package proxy

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/http2"

	"github.com/portico/portico/config"
)

// NewServer returns the settings of the plain-HTTP server for h, which
// h1.Server serves: a slow client gets read_header_timeout to send its
// headers and idle_timeout between requests, and header blocks beyond
// max_header_bytes are refused with 431. With h2c
// it also speaks cleartext HTTP/2, with prior knowledge or by
// "Upgrade: h2c", under the same HTTP/2 limits as the HTTPS listener.
func NewServer(sc *config.Server, h http.Handler, log *slog.Logger) (*http.Server, error) {
	srv := baseServer(sc, h, log)
	if !sc.H2C {
		return srv, nil
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	h2s := http2Server(&sc.HTTP2)
	srv.Handler = &h2cUpgrade{next: h, h2: h2s, base: srv, sendTimeout: sc.SendTimeout.Duration}
	if err := http2.ConfigureServer(srv, h2s); err != nil {
		return nil, err
	}
	// ConfigureServer gives every server a TLSConfig, which would have the
	// listener take this plain one for HTTPS (Generation).
	srv.TLSConfig = nil
	// Prior knowledge: package h1 hands the connection over inside a
	// *tls.Conn that does no TLS, as net/http does.
	srv.TLSNextProto[nextProtoUnencryptedHTTP2] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok { // a real TLS connection: never offered this protocol
			_ = c.Close()
			return
		}
		h2s.ServeConn(newCoalescingConn(u.UnencryptedNetConn(), sc.SendTimeout.Duration), &http2.ServeConnOpts{Handler: h, BaseConfig: hs, SawClientPreface: true})
	}
	return srv, nil
}

const nextProtoUnencryptedHTTP2 = "unencrypted_http2" // net/http's TLSNextProto key

// NewTLSServer returns the HTTPS server for h: HTTP/1.1 and HTTP/2 by ALPN,
// with the limits of NewServer and [server.http2]. tc supplies the
// certificates; serve it on tls.NewListener(ln, srv.TLSConfig).
func NewTLSServer(sc *config.Server, h http.Handler, tc *tls.Config, log *slog.Logger) (*http.Server, error) {
	srv := baseServer(sc, h, log)
	srv.TLSConfig = tc
	h2s := http2Server(&sc.HTTP2)
	if err := http2.ConfigureServer(srv, h2s); err != nil {
		return nil, err
	}
	// As ConfigureServer's own hand-over, with the connection's writes
	// coalesced (h2write.go).
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		h2s.ServeConn(newCoalescingConn(c, sc.SendTimeout.Duration), &http2.ServeConnOpts{Handler: h, BaseConfig: hs})
	}
	return srv, nil
}

func baseServer(sc *config.Server, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Duration,
		IdleTimeout:       sc.IdleTimeout.Duration,
		MaxHeaderBytes:    sc.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// http2Server sets every limit explicitly rather than trusting library
// defaults to stay put. Go's rapid-reset and flood protections are on in
// any http2.Server and need no setting.
func http2Server(c *config.HTTP2) *http2.Server {
	return &http2.Server{
		MaxConcurrentStreams: uint32(c.MaxConcurrentStreams),
		MaxReadFrameSize:     uint32(c.MaxReadFrameSize),
		IdleTimeout:          c.IdleTimeout.Duration,
	}
}

// Redirect answers every request with 308 Permanent Redirect to the same
// host, path and query on https. 308, unlike 301, keeps the method and
// body. httpsPort is added to the host unless it is "443" or "".
func Redirect(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if host == "" {
			http.Error(w, "a Host header is needed to redirect to https", http.StatusBadRequest)
			return
		}
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		w.Header().Set("Location", "https://"+host+r.URL.RequestURI())
		w.WriteHeader(http.StatusPermanentRedirect)
	})
}
