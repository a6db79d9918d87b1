package middleware

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// forwardAuth is type "forward_auth": before a request goes on, a GET to
// the auth service asks whether it may, describing it as Traefik's
// ForwardAuth and nginx's auth_request do (X-Forwarded-Method, -Proto,
// -Host, -Uri, -For) plus the client headers listed in request_headers. A
// 2xx lets it on, with the listed response_headers copied into it (the
// client's own copies of those are always removed first); any other answer
// goes back to the client as it came. A service that cannot be reached or
// answers too late means 503: the gate stays closed.
type forwardAuth struct {
	url       string
	shown     string // url without its password, for the log
	timeout   time.Duration
	reqHdrs   []string
	respHdrs  []string
	transport *http.Transport
	log       *slog.Logger
	refused   map[int]Counter
	deny      Counter
	down      Counter
}

// authTransport is forward_auth's own keep-alive connection pool; it is the
// state a reload keeps while the options are unchanged.
type authTransport struct{ *http.Transport }

func (t authTransport) close() { t.CloseIdleConnections() }

// maxAuthBody bounds the denial body relayed from the auth service.
const maxAuthBody = 1 << 20

func newForwardAuth(name string, o *config.ForwardAuth, env Env, prior any) (Middleware, any, error) {
	t, ok := prior.(authTransport)
	if !ok {
		d := &net.Dialer{Timeout: o.Timeout.Duration, KeepAlive: 30 * time.Second}
		t = authTransport{&http.Transport{
			Proxy:               nil,
			DialContext:         d.DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}}
	}
	return &forwardAuth{
		url:       o.URL,
		shown:     shownURL(o.URL),
		timeout:   o.Timeout.Duration,
		reqHdrs:   canonical(o.RequestHeaders),
		respHdrs:  canonical(o.ResponseHeaders),
		transport: t.Transport,
		log:       env.Log.With("middleware", name),
		refused: map[int]Counter{
			http.StatusUnauthorized: env.counter(name, ReasonUnauthorized),
			http.StatusForbidden:    env.counter(name, ReasonForbidden),
		},
		deny: env.counter(name, ReasonUnauthorized),
		down: env.counter(name, ReasonAuthUnavailable),
	}, t, nil
}

// ask builds the subrequest describing r.
func (fa *forwardAuth) ask(ctx context.Context, r *http.Request) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fa.url, nil)
	if err != nil {
		return nil, err
	}
	h := req.Header
	for _, name := range fa.reqHdrs {
		if v := r.Header[name]; len(v) > 0 {
			h[name] = v
		}
	}
	h.Set("X-Forwarded-Method", r.Method)
	h.Set("X-Forwarded-Proto", scheme(r))
	h.Set("X-Forwarded-Host", r.Host)
	h.Set("X-Forwarded-Uri", r.URL.RequestURI())
	if info := reqinfo.From(r.Context()); info != nil && info.ClientIP.IsValid() {
		h.Set("X-Forwarded-For", info.ClientIP.String())
		if info.RequestID != "" {
			h.Set("X-Request-Id", info.RequestID)
		}
	}
	return req, nil
}

func (fa *forwardAuth) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), fa.timeout)
		defer cancel()
		req, err := fa.ask(ctx, r)
		var res *http.Response
		if err == nil {
			res, err = fa.transport.RoundTrip(req)
		}
		if err != nil {
			if r.Context().Err() != nil {
				return // the client left; nobody to answer
			}
			fa.down.Inc()
			fa.log.Warn("auth service unavailable", "request_id", requestIDOf(r), "url", fa.shown, "err", err)
			w.Header().Set("Retry-After", "1")
			refuse(w, http.StatusServiceUnavailable, "authentication service unavailable")
			return
		}
		defer res.Body.Close()
		if res.StatusCode < 200 || res.StatusCode > 299 {
			fa.relay(w, res)
			return
		}
		for _, name := range fa.respHdrs {
			delete(r.Header, name)
			if v := res.Header[name]; len(v) > 0 {
				r.Header[name] = v
			}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxAuthBody)) // keeps the connection reusable
		next.ServeHTTP(w, r)
	})
}

// relay passes the auth service's refusal to the client as it came: status,
// end-to-end headers, body.
func (fa *forwardAuth) relay(w http.ResponseWriter, res *http.Response) {
	if c, ok := fa.refused[res.StatusCode]; ok {
		c.Inc()
	} else {
		fa.deny.Inc()
	}
	h := w.Header()
	for k, v := range res.Header {
		if !hopByHop(k) {
			h[k] = v
		}
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(res.Body, maxAuthBody))
}

func hopByHop(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}
