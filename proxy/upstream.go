package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
)

// upstream is a pool at run time: the balancer's pool, each backend's
// transports, and the retry rule. It is the http.RoundTripper the route
// proxies use, so every attempt picks its own backend.
type upstream struct {
	pool    *balancer.Pool
	conns   []*transports // by Backend.Index
	scheme  string        // what the transports expect in request URLs
	retries int
	budget  *retryBudget
	stats   *metrics.Pool // nil without metrics
	log     *slog.Logger
	cfg     *config.Pool // for the next reload to compare against
}

// newUpstream builds the pool named name. prev is the pool of that name in
// the snapshot being replaced, or nil: a backend that was in it (same URL)
// keeps its state, and its connections too while the transport settings
// stay the same.
func newUpstream(name string, pc *config.Pool, prev *upstream, log *slog.Logger, m *metrics.Metrics) (*upstream, error) {
	var before map[string]int // backend URL -> index in prev
	keepConns := false
	if prev != nil {
		before = make(map[string]int, len(prev.conns))
		for i, b := range prev.pool.Backends() {
			before[b.URL().String()] = i
		}
		keepConns = sameTransport(prev.cfg, pc)
	}
	backends := make([]*balancer.Backend, 0, len(pc.Backends))
	conns := make([]*transports, 0, len(pc.Backends))
	hosts := make([]string, 0, len(pc.Backends))
	for _, bc := range pc.Backends {
		var b *balancer.Backend
		var t *transports
		var err error
		if i, ok := before[bc.Parsed.String()]; ok {
			b, err = prev.pool.Backends()[i].Successor(bc.Weight)
			if keepConns {
				t = prev.conns[i]
			}
		} else {
			b, err = balancer.NewBackend(bc.Parsed, bc.Weight)
		}
		if err != nil {
			return nil, err
		}
		if t == nil {
			t = newTransports(pc)
		}
		backends = append(backends, b)
		conns = append(conns, t)
		hosts = append(hosts, bc.Parsed.Host)
	}
	var pool *balancer.Pool
	var err error
	if prev != nil {
		pool, err = prev.pool.Next(backends, poolOptions(pc, log))
	} else {
		pool, err = balancer.NewPool(name, backends, poolOptions(pc, log))
	}
	if err != nil {
		return nil, err
	}
	budget := newRetryBudget(pc.RetryBudgetPercent)
	if prev != nil && prev.cfg.RetryBudgetPercent == pc.RetryBudgetPercent {
		budget = prev.budget // what retries have spent stays spent
	}
	return &upstream{
		pool: pool, conns: conns, scheme: conns[0].scheme, retries: pc.Retries,
		budget: budget, stats: m.Pool(name, hosts), log: log, cfg: pc,
	}, nil
}

// dialError marks a failure to connect: the request never left, so any
// request, whatever its method or body, may go to another backend.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

// RoundTrip sends req to a backend, retrying on others as the pool and its
// retry budget allow.
func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	info := infoFrom(req)
	body := bodyOf(req)
	u.budget.request()
	var tried balancer.Tried
	var lastErr error
	for attempt := 0; ; attempt++ {
		b, err := u.pool.Acquire(req.Context(), tried)
		if err != nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, u.unavailable(err)
		}
		tried = tried.Add(b)
		req.URL.Scheme, req.URL.Host = u.scheme, b.URL().Host
		info.Backend, info.Attempts = b.URL().Host, attempt+1

		res, err := u.attempt(req, b, body, info)
		if err == nil {
			res.Body = releaseOnClose(res, b)
			return res, nil
		}
		b.Release()
		lastErr = err
		if attempt >= u.retries || !retryable(req, body, err) || !u.budget.retry() {
			return nil, err
		}
		u.stats.Retry()
		u.log.Info("retrying on another backend", "request_id", info.RequestID, "route", info.Route,
			"pool", u.pool.Name(), "backend", info.Backend, "attempt", attempt+1, "err", err)
	}
}

// retryable decides whether a failed attempt may be sent to another backend.
// A failed dial never reached a backend, so it is always safe while the body
// is unread (body is nil for a body Handler did not wrap, which therefore
// counts as read). Once a request was sent, only idempotent requests
// without a body are repeated, and never after a timeout (the backend may
// still be working on it) or once the client has gone.
func retryable(req *http.Request, body *clientBody, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	if errors.As(err, new(dialError)) {
		return req.Body == nil || body != nil && !body.read()
	}
	if req.Body != nil || !idempotent(req.Method) {
		return false
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// releaseOnClose ends the backend's in-flight count when the response body is
// closed, so least_conn sees requests until their bodies are fully relayed.
// A 101 body is the upgraded connection, which ReverseProxy needs writable.
func releaseOnClose(res *http.Response, b *balancer.Backend) io.ReadCloser {
	if rwc, ok := res.Body.(io.ReadWriteCloser); ok && res.StatusCode == http.StatusSwitchingProtocols {
		rc := &releaseConn{w: rwc}
		rc.ReadCloser = res.Body
		rc.backend.Store(b)
		return rc
	}
	rb := &releaseBody{ReadCloser: res.Body}
	rb.backend.Store(b)
	return rb
}

type releaseBody struct {
	io.ReadCloser
	backend atomic.Pointer[balancer.Backend] // swapped out once: Close may race on upgrades
}

func (r *releaseBody) Close() error {
	err := r.ReadCloser.Close()
	if b := r.backend.Swap(nil); b != nil {
		b.Release()
	}
	return err
}

type releaseConn struct {
	releaseBody
	w io.Writer
}

func (r *releaseConn) Write(p []byte) (int, error) { return r.w.Write(p) }

// CloseWrite passes a client's half-close on to the backend; without it
// ReverseProxy tears the whole tunnel down when one side stops sending.
func (r *releaseConn) CloseWrite() error {
	if cw, ok := r.w.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return http.ErrNotSupported
}
