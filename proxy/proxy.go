// Package proxy owns the request path: the route table, forwarding to a
// pool's backends with retries and error mapping, and the HTTP servers that
// face clients. It creates each request's record (package reqinfo) and fills
// in what it learns, for logging and metrics to read.
//
// Everything a request needs is in one immutable Snapshot built from a
// validated configuration; Handler serves from whichever snapshot it holds
// and a reload swaps in a new one atomically. proxy asks balancer for
// backends and never changes backend state itself beyond in-flight counts.
package proxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/reqinfo"
)

// Snapshot is the immutable runtime form of one configuration.
type Snapshot struct {
	bodyTimeout, sendTimeout time.Duration
	routes                   routeTable
	upstreams                map[string]*upstream
	pools                    []*balancer.Pool // sorted by name
	unrouted                 *metrics.Route   // requests no route matched

	// The predecessor's backend transports this snapshot does not use, for
	// Drain to close.
	retiring []retiring
}

// Option adds to what a snapshot is built with.
type Option func(*options)

type options struct {
	metrics *metrics.Metrics
}

// WithMetrics records every request and backend attempt in m. Without it
// nothing is recorded.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// NewSnapshot builds the runtime form of a validated configuration.
func NewSnapshot(cfg *config.Config, log *slog.Logger, opts ...Option) (*Snapshot, error) {
	return NextSnapshot(nil, cfg, log, opts...)
}

// NextSnapshot builds the snapshot of cfg that replaces prev on a reload
// (prev may be nil). A backend in a pool of the same name in both, with the
// same URL, keeps its state (health, ejection, slow start, latency,
// in-flight requests) and, while its pool's transport settings do not
// change, its connections. prev is not changed: it serves on, unaffected,
// until the new snapshot is swapped in, and its requests finish on it.
// Once the new snapshot is in use, Drain closes what prev used and it does
// not.
func NextSnapshot(prev *Snapshot, cfg *config.Config, log *slog.Logger, opts ...Option) (*Snapshot, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Snapshot{
		bodyTimeout: cfg.Server.ClientBodyTimeout.Duration,
		sendTimeout: cfg.Server.SendTimeout.Duration,
		upstreams:   make(map[string]*upstream, len(cfg.Pools)),
		unrouted:    o.metrics.Route(metrics.Unrouted),
	}
	for name, pc := range cfg.Pools {
		var before *upstream
		if prev != nil {
			before = prev.upstreams[name]
		}
		up, err := newUpstream(name, pc, before, log, o.metrics)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", name, err)
		}
		s.upstreams[name] = up
		s.pools = append(s.pools, up.pool)
	}
	// Seam for the middleware chain (issue 8): build the snapshot's
	// middlewares here from prev's, so that those whose options did not
	// change keep their state (rate-limit buckets).
	if prev != nil {
		s.retiring = retiringFrom(prev, s)
	}
	sort.Slice(s.pools, func(i, j int) bool { return s.pools[i].Name() < s.pools[j].Name() })

	routes := make([]*route, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		up, ok := s.upstreams[rc.Pool]
		if !ok {
			return nil, fmt.Errorf("route %s%s: no pool %q", rc.Host, rc.PathPrefix, rc.Pool)
		}
		rt := &route{
			name:   rc.Name,
			host:   strings.TrimSuffix(strings.ToLower(rc.Host), "."),
			prefix: rc.PathPrefix,
			strip:  rc.StripPrefix,
			pool:   rc.Pool,
			stats:  o.metrics.Route(rc.Name),
		}
		rt.handler = newForwarder(rt, up, cfg.Server.Trusted, log)
		routes = append(routes, rt)
	}
	s.routes = newRouteTable(routes)
	return s, nil
}

// Pools lists the snapshot's pools by name, for health checks and the admin API.
func (s *Snapshot) Pools() []*balancer.Pool { return s.pools }

// Close releases the snapshot's idle backend connections. Requests still in
// flight finish on their connections, which then close.
func (s *Snapshot) Close() {
	for _, up := range s.upstreams {
		for _, t := range up.conns {
			t.closeIdle()
		}
	}
}

// Handler routes each request through the current snapshot.
type Handler struct {
	snap atomic.Pointer[Snapshot]
}

// NewHandler returns a handler serving from s.
func NewHandler(s *Snapshot) *Handler {
	h := &Handler{}
	h.snap.Store(s)
	return h
}

// Snapshot returns the snapshot now in use.
func (h *Handler) Snapshot() *Snapshot { return h.snap.Load() }

// Swap puts s in use for new requests and returns the one it replaces.
func (h *Handler) Swap(s *Snapshot) *Snapshot { return h.snap.Swap(s) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, info := reqinfo.NewContext(r.Context())
	info.Start = time.Now()
	d, _ := w.(deadliner) // before wrapping: the wrappers hide it
	stats := h.serve(&recorder{ResponseWriter: w, info: info}, d, r.WithContext(ctx), info)
	if info.Status == 0 {
		info.Status = http.StatusOK // a handler that wrote nothing sent an empty 200
	}
	stats.Observe(r.Method, info.Status, time.Since(info.Start), info.BytesOut)
}

// serve answers the request and returns the series it is recorded in.
func (h *Handler) serve(w http.ResponseWriter, d deadliner, r *http.Request, info *reqinfo.Info) *metrics.Route {
	if hasDotSegment(r.URL.Path) {
		// Resolve "." and ".." before matching, as nginx does, so that
		// "/public/../admin" cannot match "/public" and reach a backend
		// that resolves it to "/admin" behind the route's back.
		cleanPath(r.URL)
	}
	s := h.snap.Load()
	rt := s.routes.match(r.Host, r.URL.Path)
	if rt == nil {
		http.Error(w, "no route for this host and path", http.StatusNotFound)
		return s.unrouted
	}
	info.Route, info.Pool = rt.name, rt.pool
	if d != nil {
		w = guardSlowClient(w, d, r, s.bodyTimeout, s.sendTimeout)
	}
	rt.handler.ServeHTTP(w, r)
	return rt.stats
}

func hasDotSegment(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '.' || (i > 0 && p[i-1] != '/') {
			continue
		}
		j := i + 1
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' {
			return true
		}
	}
	return false
}

// cleanPath resolves dot segments, keeping a trailing slash.
func cleanPath(u *url.URL) {
	cleaned := path.Clean("/" + u.Path)
	if strings.HasSuffix(u.Path, "/") && cleaned != "/" {
		cleaned += "/"
	}
	u.Path, u.RawPath = cleaned, ""
}
