package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"

	"github.com/portico/portico/reqinfo"
)

// newForwarder is the handler at the end of a route: the standard library's
// ReverseProxy (hop-by-hop headers, trailers, 1xx, upgrades, flushing of
// streams) with Portico's rewrite, error mapping and pooled buffers. The
// upstream picks the backend for each attempt.
func newForwarder(rt *route, up *upstream, log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The transport reads the body through Handler's wrapper rather
			// than ReverseProxy's, whose only job, ignoring Close, it does too,
			// so that every attempt's outcome can be told from the body's.
			if b := bodyOf(pr.In); b != nil && pr.Out.Body != nil {
				pr.Out.Body = b
			}
			refuseH2CUpgrade(pr.Out.Header)
			if rt.strip {
				stripPrefix(pr.Out, rt.prefix)
			}
			setForwarded(pr.In, pr.Out, infoFrom(pr.In).TrustedPeer)
		},
		Transport:      up,
		ModifyResponse: checkResponse,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler:   errorHandler(log),
	}
}

// refuseH2CUpgrade keeps "Upgrade: h2c" from reaching a backend. A backend
// that accepted it would give the client a raw HTTP/2 connection past the
// proxy's routing and checks ("h2c smuggling"); the request goes on as plain
// HTTP/1.1, as a server that ignores the upgrade would answer it.
func refuseH2CUpgrade(h http.Header) {
	if httpguts.HeaderValuesContainsToken(h["Upgrade"], "h2c") {
		delete(h, "Upgrade")
		delete(h, "Connection")
	}
}

// errWrongUpgrade: the backend switched to a protocol the client did not ask for.
var errWrongUpgrade = errors.New("backend switched to a protocol the client did not ask for")

// checkResponse looks at a backend's response before it is relayed.
//
// A 101 to another protocol than the client asked for becomes an error
// before ReverseProxy handles the upgrade: ReverseProxy would refuse it too,
// but without closing the response body, so the backend's in-flight count
// and connection would never be released. An error here closes the body.
//
// A backend may answer before it has read the whole request body. The rest
// of the body may still be on its way to that backend, or nowhere, and the
// client connection cannot be reused until it is read: rather than let
// net/http discard it while the transport may still be reading it, the
// client connection is closed after this response.
func checkResponse(res *http.Response) error {
	if res.StatusCode != http.StatusSwitchingProtocols {
		if req := res.Request; req != nil && req.ProtoMajor == 1 {
			if b := bodyOf(req); b != nil && !b.done() {
				res.Header["Connection"] = connClose
			}
		}
		return nil
	}
	if !strings.EqualFold(res.Header.Get("Upgrade"), res.Request.Header.Get("Upgrade")) {
		return errWrongUpgrade
	}
	// ReverseProxy writes the 101 to the hijacked connection, past the recorder.
	infoFrom(res.Request).Status = http.StatusSwitchingProtocols
	return nil
}

// stripPrefix removes the route prefix from the outbound path, keeping the
// path absolute. The escaped form is trimmed alike, or dropped if it differs.
func stripPrefix(out *http.Request, prefix string) {
	prefix = strings.TrimSuffix(prefix, "/")
	u := out.URL
	u.Path = ensureSlash(strings.TrimPrefix(u.Path, prefix))
	if u.RawPath != "" {
		if strings.HasPrefix(u.RawPath, prefix) {
			u.RawPath = ensureSlash(strings.TrimPrefix(u.RawPath, prefix))
		} else {
			u.RawPath = ""
		}
	}
}

func ensureSlash(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}

// setForwarded writes X-Forwarded-For, -Proto and -Host. ReverseProxy has
// already removed the client's copies from out; they are carried over only
// when the peer is a trusted proxy (as Handler found when it resolved the
// client IP), which is how a chain of proxies keeps the original client
// address without letting a client forge one. A backend that applies the
// same trusted proxies to the header finds the same client IP as Portico.
func setForwarded(in, out *http.Request, trustedPeer bool) {
	peer, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil {
		peer = in.RemoteAddr
	}
	xff := peer
	if trustedPeer {
		// What the proxy before named in Connection was meant for this hop
		// only, so it goes no further.
		hop := in.Header["Connection"]
		if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 && !httpguts.HeaderValuesContainsToken(hop, "X-Forwarded-For") {
			xff = strings.Join(prior, ", ") + ", " + peer
		}
		for _, h := range [...]string{"X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
			if v := in.Header[h]; len(v) > 0 && !httpguts.HeaderValuesContainsToken(hop, h) {
				out.Header[h] = v
			}
		}
	} else {
		// X-Real-IP is not stripped by ReverseProxy, but many backends
		// believe it as readily as X-Forwarded-For.
		delete(out.Header, "X-Real-Ip")
		dropForwardedLookalikes(out.Header)
	}
	// One allocation for both values; capped so an append cannot spill over.
	vals := []string{xff, in.Host}
	out.Header["X-Forwarded-For"] = vals[0:1:1]
	if _, ok := out.Header["X-Forwarded-Proto"]; !ok {
		out.Header["X-Forwarded-Proto"] = protoValue(in)
	}
	if _, ok := out.Header["X-Forwarded-Host"]; !ok {
		out.Header["X-Forwarded-Host"] = vals[1:2:2]
	}
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// protoValue returns a shared slice: header values are never modified in
// place by net/http, and it saves an allocation per request.
func protoValue(in *http.Request) []string {
	if in.TLS != nil {
		return protoHTTPS
	}
	return protoHTTP
}

// dropForwardedLookalikes removes headers such as "X_Forwarded_For", which
// some backends (CGI, PHP, nginx with underscores_in_headers) read as
// X-Forwarded-For: an untrusted client could smuggle a forged address in them.
func dropForwardedLookalikes(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
		case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded":
			delete(h, k)
		}
	}
}

// errorHandler answers a failed forward with a short plain-text status; the
// cause, which may name internal addresses, goes only to the log.
func errorHandler(log *slog.Logger) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		info := infoFrom(r)
		if b := bodyOf(r); b != nil && b.failed() != 0 {
			// The client's fault, whatever the transport made of it.
			status := b.failed()
			info.Status = status
			log.Info("client request body failed", "request_id", info.RequestID, "route", info.Route, "pool", info.Pool,
				"backend", info.Backend, "status", status, "err", err)
			refuse(w, r, status)
			return
		}
		if r.Context().Err() != nil {
			// The client went away; nobody is left to answer.
			info.Status = reqinfo.StatusClientClosed
			log.Debug("client closed request", "request_id", info.RequestID, "route", info.Route, "backend", info.Backend, "err", err)
			return
		}
		status := statusFor(err)
		info.Status = status
		log.Warn("backend request failed", "request_id", info.RequestID, "route", info.Route, "pool", info.Pool,
			"backend", info.Backend, "attempts", info.Attempts, "status", status, "err", err)
		setRetryAfter(w.Header(), err)
		if b := bodyOf(r); b != nil && !b.done() && r.ProtoMajor == 1 {
			// The client's body was not read to its end: see checkResponse.
			w.Header()["Connection"] = connClose
		}
		writeError(w, status)
	}
}

func statusFor(err error) int {
	var ne net.Error
	switch {
	case errors.As(err, new(*unavailable)):
		return http.StatusServiceUnavailable
	case errors.As(err, new(dialError)):
		return http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func writeError(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(strings.ToLower(http.StatusText(status)) + "\n"))
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers. The pool holds
// array pointers, which a slice converts back to without allocating.
type bufferPool struct{}

const bufferSize = 32 << 10

var buffers = sync.Pool{New: func() any { return new([bufferSize]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[bufferSize]byte)[:] }

func (bufferPool) Put(b []byte) {
	if cap(b) >= bufferSize {
		buffers.Put((*[bufferSize]byte)(b[:bufferSize]))
	}
}
