package middleware

import (
	"net/http"
	"sync"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// concurrencyLimit is type "concurrency_limit": at most max requests in
// flight per key. Excess requests wait up to queue_timeout for a slot, then
// get 503 with Retry-After. With key "route" each route has its slots,
// bound when the chain is built; other keys look their slots up per request
// and drop them when the last request of a key ends, so the table holds only
// keys with requests in flight.
type concurrencyLimit struct {
	st       *concurrencyState
	key      config.LimitKey
	wait     time.Duration
	rejected Counter
}

// concurrencyState outlives a snapshot while the options stay the same:
// requests still running on the old snapshot keep holding their slots.
type concurrencyState struct {
	max    int
	mu     sync.Mutex
	routes map[string]*slots // key "route": built once per route
	keyed  map[Key]*slots    // other keys: only those in flight
}

// slots is a counting semaphore.
type slots struct {
	ch   chan struct{}
	refs int // requests holding or waiting for a slot; keyed table only
}

func newConcurrencyLimit(name string, o *config.ConcurrencyLimit, env Env, prior any) (Middleware, any, error) {
	st, _ := prior.(*concurrencyState)
	if st == nil {
		st = &concurrencyState{max: o.Max, routes: map[string]*slots{}, keyed: map[Key]*slots{}}
	}
	return &concurrencyLimit{st: st, key: o.Limit, wait: o.QueueTimeout.Duration, rejected: env.counter(name, ReasonOverConcurrency)}, st, nil
}

func (cl *concurrencyLimit) Wrap(next http.Handler, route string) http.Handler {
	if cl.key.Kind == config.KeyRoute {
		cl.st.mu.Lock()
		s, ok := cl.st.routes[route]
		if !ok {
			s = &slots{ch: make(chan struct{}, cl.st.max)}
			cl.st.routes[route] = s
		}
		cl.st.mu.Unlock()
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !cl.acquire(s, r) {
				cl.refuse(w)
				return
			}
			defer func() { <-s.ch }()
			next.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := limitKey(cl.key, r, reqinfo.From(r.Context()))
		s := cl.st.hold(k)
		defer cl.st.drop(k, s)
		if !cl.acquire(s, r) {
			cl.refuse(w)
			return
		}
		defer func() { <-s.ch }()
		next.ServeHTTP(w, r)
	})
}

// acquire takes a slot, waiting up to the queue timeout, or less if the
// client goes away.
func (cl *concurrencyLimit) acquire(s *slots, r *http.Request) bool {
	select {
	case s.ch <- struct{}{}:
		return true
	default:
	}
	if cl.wait <= 0 {
		return false
	}
	t := time.NewTimer(cl.wait)
	defer t.Stop()
	select {
	case s.ch <- struct{}{}:
		return true
	case <-t.C:
	case <-r.Context().Done():
	}
	return false
}

func (cl *concurrencyLimit) refuse(w http.ResponseWriter) {
	cl.rejected.Inc()
	w.Header().Set("Retry-After", "1")
	refuse(w, http.StatusServiceUnavailable, "too many requests in progress")
}

func (st *concurrencyState) hold(k Key) *slots {
	st.mu.Lock()
	s, ok := st.keyed[k]
	if !ok {
		s = &slots{ch: make(chan struct{}, st.max)}
		st.keyed[k] = s
	}
	s.refs++
	st.mu.Unlock()
	return s
}

func (st *concurrencyState) drop(k Key, s *slots) {
	st.mu.Lock()
	if s.refs--; s.refs == 0 {
		delete(st.keyed, k)
	}
	st.mu.Unlock()
}
