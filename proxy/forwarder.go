package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/proxy/h1"
	"github.com/portico/portico/reqinfo"
)

// forwarder is the handler at the end of a route. It sends the request to a
// backend of the route's pool, retrying on others as the pool and its retry
// budget allow, and relays the answer: HTTP/1.1 backends through Portico's
// own client (package h1), on the handler's goroutine; HTTP/2 backends
// through net/http's transports. It handles what a reverse proxy must:
// hop-by-hop headers both ways, X-Forwarded-*, TE: trailers, trailers, 1xx,
// Expect: 100-continue, upgrades with half-close, flushing of streams,
// aborting a response whose body failed, and cancelling the backend
// request when the client goes away.
type forwarder struct {
	rt  *route
	up  *upstream
	log *slog.Logger
}

func newForwarder(rt *route, up *upstream, log *slog.Logger) http.Handler {
	return &forwarder{rt: rt, up: up, log: log}
}

// errAborted: the response was under way when the exchange failed, so the
// only honest thing left is to break the client's connection (or stream).
var errAborted = errors.New("response aborted")

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var o outbound
	err := newOutbound(&o, r, f.rt)
	if err == nil {
		err = f.forward(w, &o, infoFrom(r))
		o.release()
	}
	switch err {
	case nil:
	case errAborted:
		// net/http closes the connection (HTTP/1) or resets the stream
		// (HTTP/2), so a client cannot take a truncated body for a whole one.
		panic(http.ErrAbortHandler)
	default:
		f.fail(w, r, err)
		if o.pending != nil {
			_ = o.pending.stop(w, o.cb)
		}
	}
}

// forward makes the attempts. An error return means nothing was sent to the
// client yet, except errAborted.
func (f *forwarder) forward(w http.ResponseWriter, o *outbound, info *reqinfo.Info) error {
	u := f.up
	u.budget.request()
	var tried balancer.Tried
	var lastErr error
	for attempt := 0; ; attempt++ {
		b, err := u.pool.Acquire(o.r.Context(), tried)
		if err != nil {
			if lastErr != nil {
				return lastErr
			}
			return u.unavailable(err)
		}
		tried = tried.Add(b)
		info.Backend, info.Attempts = b.URL().Host, attempt+1
		err = f.attempt(w, o, b, info)
		if err == nil || err == errAborted {
			return err
		}
		lastErr = err
		if attempt >= u.retries || !retryable(o, err) || !u.budget.retry() {
			return err
		}
		u.stats.Retry()
		u.log.Info("retrying on another backend", "request_id", info.RequestID, "route", info.Route,
			"pool", u.pool.Name(), "backend", info.Backend, "attempt", attempt+1, "err", err)
	}
}

// attempt sends the request to b and, if b answers, relays the answer. The
// backend counts the request in flight until the answer's body is relayed.
func (f *forwarder) attempt(w http.ResponseWriter, o *outbound, b *balancer.Backend, info *reqinfo.Info) error {
	defer b.Release()
	start := time.Now()
	var err error
	if pool := f.up.h1Pool(b, o.upgrade != ""); pool != nil {
		err = f.h1(w, o, b, pool, start, info)
		if err != errSpeaksH2 {
			return err
		}
		f.up.useH2(b)
	}
	return f.roundTrip(w, o, b, start, info)
}

// answered reports a response head's arrival to b (latency for ewma, 5xx
// for passive detection), to the record and to the metrics.
func (u *upstream) answered(b *balancer.Backend, status int, start time.Time, info *reqinfo.Info) {
	rtt := time.Since(start)
	info.BackendTTFB = rtt
	if status >= 500 {
		b.Report(balancer.ServerError, rtt)
	} else {
		b.Report(balancer.Success, rtt)
	}
	u.stats.Attempt(b.Index(), status, rtt)
}

// failed reports an attempt that got no answer. One the client abandoned,
// or whose request body the client failed to send, says nothing about the
// backend.
func (u *upstream) failed(b *balancer.Backend, o *outbound, start time.Time, err error) {
	if o.r.Context().Err() != nil || errors.As(err, new(*h1.SrcError)) || o.cb != nil && o.cb.failed() != 0 {
		return
	}
	rtt := time.Since(start)
	b.Report(balancer.Failure, rtt)
	u.stats.Attempt(b.Index(), 0, rtt)
}

// retryable decides whether a failed attempt may be sent to another backend.
// A failed dial never reached a backend, so it is always safe while the body
// can be sent again. Once a request was sent, only idempotent requests
// without a body are repeated, and never after a timeout (the backend may
// still be working on it) or once the client has gone.
func retryable(o *outbound, err error) bool {
	if o.r.Context().Err() != nil {
		return false
	}
	if errors.As(err, new(dialError)) {
		return o.replayable()
	}
	if o.hasBody() || !idempotent(o.r.Method) {
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

// fail answers a request that got no answer from any backend.
func (f *forwarder) fail(w http.ResponseWriter, r *http.Request, err error) {
	errorHandler(f.log)(w, r, err)
}
