// Package middleware owns the steps a request passes between routing and
// forwarding: authentication (basic_auth, api_key, jwt, forward_auth),
// ip_filter, rate and concurrency limits, request IDs, header rules,
// redirects and rewrites, and compression (subpackage compress).
//
// Each [middlewares.NAME] table is built once per configuration snapshot,
// from its validated options, into a Middleware; a route's chain is
// composed from them when the snapshot is built, so nothing is looked up by
// name per request. A middleware reads and writes the request's record
// (package reqinfo): the client IP resolved by the proxy, the identity it
// establishes, the request ID. A middleware that refuses a request answers
// it itself with a short plain-text body; the backend never sees it.
//
// Stateful middlewares (rate_limit, concurrency_limit, basic_auth's cache,
// jwt's key set, forward_auth's connections) keep their state across
// snapshots while their type and options stay the same, so a reload keeps
// rate-limit buckets and in-flight counts. The package never imports proxy.
package middleware

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/middleware/compress"
	"github.com/portico/portico/reqinfo"
)

// Counter counts one kind of refusal. Package metrics provides counters
// that satisfy it; nil Rejections means no counting.
type Counter interface{ Inc() }

// Rejections returns the counter of one middleware's refusals for one
// reason. It is called when a snapshot is built, never per request.
type Rejections func(middleware, reason string) Counter

// Reasons a middleware refuses a request: a fixed set, so that they make
// bounded metric labels.
const (
	ReasonUnauthorized    = "unauthorized"     // 401: no or bad credentials
	ReasonForbidden       = "forbidden"        // 403: ip_filter, or the auth service said no
	ReasonRateLimited     = "rate_limited"     // 429
	ReasonOverConcurrency = "over_concurrency" // 503: concurrency_limit
	ReasonAuthUnavailable = "auth_unavailable" // 503: forward_auth could not ask its service
)

// Env is what building middlewares needs besides their options.
type Env struct {
	Log        *slog.Logger
	Rejections Rejections       // nil: refusals are not counted
	Now        func() time.Time // nil: time.Now; tests inject a clock
	// Global makes the deciders of rate limits with scope = "global"
	// (package cluster); nil when there is no [cluster].
	Global Global
}

// Global makes rate-limit deciders whose state several instances share.
// It is made once per process, not per snapshot: the deciders it returns
// are cheap views of its one connection pool.
type Global interface {
	// RateLimiter returns the decider of the named rate_limit. local is
	// the middleware's own table, kept across snapshots, which decides
	// when the shared store cannot if the options say so.
	RateLimiter(name string, o *config.RateLimit, local Decider) Decider
}

func (e *Env) counter(name, reason string) Counter {
	if e.Rejections == nil {
		return nopCounter{}
	}
	if c := e.Rejections(name, reason); c != nil {
		return c
	}
	return nopCounter{}
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

type nopCounter struct{}

func (nopCounter) Inc() {}

// Middleware is one built middleware.
type Middleware interface {
	// Wrap puts the middleware in front of next on the named route. The
	// route's name matters to middlewares whose state is per route.
	Wrap(next http.Handler, route string) http.Handler
}

// Func is a middleware whose behaviour is the same on every route.
type Func func(http.Handler) http.Handler

// Wrap implements Middleware.
func (f Func) Wrap(next http.Handler, _ string) http.Handler { return f(next) }

// state is what a stateful middleware carries across snapshots. It is
// shared by every Set that uses it and closed when the last one is.
type state struct {
	value any // the type's own state
	refs  atomic.Int32
}

// closer is a state that holds goroutines or connections.
type closer interface{ close() }

// Set is one snapshot's middlewares, by name.
type Set struct {
	byName map[string]*built
}

type built struct {
	def *config.Middleware
	mw  Middleware
	st  *state // nil for stateless types
}

// Build builds every middleware of a configuration. prev is the set of the
// snapshot being replaced, or nil: a stateful middleware whose name, type
// and options are unchanged takes over its state.
func Build(defs map[string]*config.Middleware, prev *Set, env Env) (*Set, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	s := &Set{byName: make(map[string]*built, len(defs))}
	for name, def := range defs {
		var prior any
		var old *state
		if prev != nil {
			if p, ok := prev.byName[name]; ok && p.st != nil && p.def.Type == def.Type && reflect.DeepEqual(p.def.Options, def.Options) {
				old, prior = p.st, p.st.value
			}
		}
		mw, value, err := build(name, def, env, prior)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("middleware %q: %w", name, err)
		}
		b := &built{def: def, mw: mw}
		switch {
		case old != nil && value == prior:
			old.refs.Add(1)
			b.st = old
		case value != nil:
			b.st = &state{value: value}
			b.st.refs.Store(1)
		}
		s.byName[name] = b
	}
	return s, nil
}

// build makes one middleware; prior is the state of the same middleware in
// the previous snapshot, or nil. It returns the state the middleware uses.
func build(name string, def *config.Middleware, env Env, prior any) (Middleware, any, error) {
	switch o := def.Options.(type) {
	case *config.BasicAuth:
		return newBasicAuth(name, o, env, prior)
	case *config.APIKey:
		return newAPIKey(name, o, env), nil, nil
	case *config.JWT:
		return newJWT(name, o, env, prior)
	case *config.ForwardAuth:
		return newForwardAuth(name, o, env, prior)
	case *config.IPFilter:
		return newIPFilter(name, o, env), nil, nil
	case *config.RateLimit:
		return newRateLimit(name, o, env, prior)
	case *config.ConcurrencyLimit:
		return newConcurrencyLimit(name, o, env, prior)
	case *config.RequestID:
		return newRequestID(o), nil, nil
	case *config.Headers:
		return newHeaders(o), nil, nil
	case *config.Redirect:
		return newRedirect(o), nil, nil
	case *config.Rewrite:
		return newRewrite(o), nil, nil
	case *config.Compress:
		return Func(compress.New(o)), nil, nil
	}
	return nil, nil, fmt.Errorf("type %q has no implementation", def.Type)
}

// Chain puts the named middlewares in front of h, the first name outermost
// (it sees the request first). Names come from a validated configuration.
func (s *Set) Chain(names []string, route string, h http.Handler) (http.Handler, error) {
	for i := len(names) - 1; i >= 0; i-- {
		b, ok := s.byName[names[i]]
		if !ok {
			return nil, fmt.Errorf("no middleware named %q", names[i])
		}
		h = b.mw.Wrap(h, route)
	}
	return h, nil
}

// Close releases the states no later set took over: goroutines stop, idle
// connections close. Requests still running keep working with what they hold.
func (s *Set) Close() {
	if s == nil {
		return
	}
	for _, b := range s.byName {
		if b.st != nil && b.st.refs.Add(-1) == 0 {
			if c, ok := b.st.value.(closer); ok {
				c.close()
			}
		}
	}
}

// refuse answers a request the middleware will not let through.
func refuse(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// setHeader replaces a request header with one value. The client's copies
// go first, so that a client cannot forge what a middleware tells the
// backend; name must be canonical, as the header map's keys are.
func setHeader(h http.Header, name, value string) {
	h[name] = []string{value}
}

// requestIDOf is the request's ID, for log lines about it.
func requestIDOf(r *http.Request) string {
	if info := reqinfo.From(r.Context()); info != nil {
		return info.RequestID
	}
	return ""
}

// shownURL is a URL as log lines show it: with "xxxxx" for a password
// (https://user:password@host/...).
func shownURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}
