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
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/middleware"
	"github.com/portico/portico/reqinfo"
)

// Snapshot is the immutable runtime form of one configuration.
type Snapshot struct {
	bodyTimeout, sendTimeout time.Duration
	trusted                  []netip.Prefix
	maxHeaderCount           int
	log                      *slog.Logger
	routes                   routeTable
	upstreams                map[string]*upstream
	pools                    []*balancer.Pool // sorted by name
	unrouted                 *metrics.Route   // requests no route matched
	middlewares              *middleware.Set
	access                   AccessLogger // nil: no access log

	// What the snapshot this one replaces used and this one does not, for
	// Drain: backend transports, and its middleware set (whose states this
	// one took over stay).
	retiring        []retiring
	prevMiddlewares *middleware.Set
}

// AccessLogger writes the line of a finished request (package accesslog).
type AccessLogger interface {
	Log(r *http.Request, info *reqinfo.Info)
}

// Option adds to what a snapshot is built with.
type Option func(*options)

type options struct {
	metrics    *metrics.Metrics
	prev       *Snapshot
	rejections middleware.Rejections
	access     AccessLogger
	global     middleware.Global
}

// WithMetrics records every request and backend attempt in m. Without it
// nothing is recorded.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// WithPrevious builds the snapshot that replaces prev on a reload. A
// backend in a pool of the same name in both, with the same URL, keeps its
// state (health, ejection, slow start, latency, in-flight requests) and,
// while its pool's transport settings do not change, its connections;
// middlewares whose options did not change keep their state (rate-limit
// buckets, in-flight counts, caches). prev is not changed: it serves on
// until the new snapshot is swapped in, and its requests finish on it.
// Once the new snapshot is in use, its Drain retires what prev used and it
// does not.
func WithPrevious(prev *Snapshot) Option { return func(o *options) { o.prev = prev } }

// WithRejections counts middleware refusals (package metrics).
func WithRejections(r middleware.Rejections) Option {
	return func(o *options) { o.rejections = r }
}

// WithGlobal decides rate limits with scope = "global" through g (package
// cluster), made once per process and shared by every snapshot.
func WithGlobal(g middleware.Global) Option { return func(o *options) { o.global = g } }

// WithAccessLog writes a line per request to l, routed or not.
func WithAccessLog(l AccessLogger) Option { return func(o *options) { o.access = l } }

// NewSnapshot builds the runtime form of a validated configuration.
func NewSnapshot(cfg *config.Config, log *slog.Logger, opts ...Option) (*Snapshot, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Snapshot{
		bodyTimeout:    cfg.Server.ClientBodyTimeout.Duration,
		sendTimeout:    cfg.Server.SendTimeout.Duration,
		trusted:        cfg.Server.Trusted,
		maxHeaderCount: cfg.Server.MaxHeaderCount,
		log:            log,
		upstreams:      make(map[string]*upstream, len(cfg.Pools)),
		access:         o.access,
		unrouted:       o.metrics.Route(metrics.Unrouted),
	}
	var prevSet *middleware.Set
	if o.prev != nil {
		prevSet = o.prev.middlewares
	}
	mws, err := middleware.Build(cfg.Middlewares, prevSet, middleware.Env{Log: log, Rejections: o.rejections, Global: o.global})
	if err != nil {
		return nil, err
	}
	s.middlewares = mws
	for name, pc := range cfg.Pools {
		var before *upstream
		if o.prev != nil {
			before = o.prev.upstreams[name]
		}
		up, err := newUpstream(name, pc, before, log, o.metrics)
		if err != nil {
			s.Discard()
			return nil, fmt.Errorf("pool %q: %w", name, err)
		}
		s.upstreams[name] = up
		s.pools = append(s.pools, up.pool)
	}
	if o.prev != nil {
		s.retiring, s.prevMiddlewares = retiringFrom(o.prev, s), o.prev.middlewares
	}
	sort.Slice(s.pools, func(i, j int) bool { return s.pools[i].Name() < s.pools[j].Name() })

	routes := make([]*route, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		up, ok := s.upstreams[rc.Pool]
		if !ok {
			s.Discard()
			return nil, fmt.Errorf("route %s: no pool %q", rc.Name, rc.Pool)
		}
		rt := &route{
			name:    rc.Name,
			host:    strings.TrimSuffix(strings.ToLower(rc.Host), "."),
			prefix:  rc.PathPrefix,
			strip:   rc.StripPrefix,
			pool:    rc.Pool,
			maxBody: rc.MaxBodyBytes,
			stats:   o.metrics.Route(rc.Name),
		}
		// Server middlewares first, then the route's, then forwarding.
		chain := append(append([]string{}, cfg.Server.Middlewares...), rc.Middlewares...)
		if rt.handler, err = mws.Chain(chain, rc.Name, newForwarder(rt, up, log)); err != nil {
			s.Discard()
			return nil, fmt.Errorf("route %s: %w", rc.Name, err)
		}
		routes = append(routes, rt)
	}
	s.routes = newRouteTable(routes)
	return s, nil
}

// Pools lists the snapshot's pools by name, for health checks and the admin API.
func (s *Snapshot) Pools() []*balancer.Pool { return s.pools }

// Close releases the snapshot's idle backend connections and the
// middleware state no later snapshot took over, when it is the last one
// (the process stops). Requests still in flight finish on their
// connections, which then close. A snapshot replaced on a reload is
// retired by its successor's Drain instead, which leaves alone what the
// two share.
func (s *Snapshot) Close() {
	for _, up := range s.upstreams {
		for _, t := range up.conns {
			t.closeIdle()
		}
	}
	s.middlewares.Close()
}

// Discard releases what a snapshot that never served holds: the middleware
// states no other snapshot uses. Connections it shares with the snapshot
// it was to replace are left alone; its own have never been opened.
func (s *Snapshot) Discard() { s.middlewares.Close() }

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
	// Portico's HTTP/1 server makes the record with the request; HTTP/2
	// requests get theirs here.
	inner, info := r, reqinfo.From(r.Context())
	if info == nil {
		var ctx context.Context
		ctx, info = reqinfo.NewContext(r.Context())
		inner = r.WithContext(ctx)
	}
	info.Start = time.Now()
	s := h.snap.Load()
	info.ClientIP, info.TrustedPeer = clientIP(r, s.trusted)
	d, _ := w.(deadliner) // before wrapping: the wrappers hide it
	wr := wrapperPool.get()
	wr.rec = recorder{ResponseWriter: w, info: info}
	var body *clientBody
	if inner.Body != nil && inner.Body != http.NoBody {
		body = new(clientBody)
		body.init(inner, d, s.bodyTimeout)
		inner.Body = body
	}
	stats := s.unrouted
	// Deferred, so that a response cut short (the forwarder aborts it with
	// http.ErrAbortHandler, which unwinds to the server) is logged and
	// counted too.
	defer func() {
		if body != nil {
			body.finish(d, info)
		}
		if info.Status == 0 {
			info.Status = http.StatusOK // a handler that wrote nothing sent an empty 200
		}
		stats.Observe(r.Method, info.Status, time.Since(info.Start), info.BytesOut)
		if s.access != nil {
			// The original request: its path is what the client asked for,
			// before a rewrite (dot segments resolved, as routing saw it).
			s.access.Log(r, info)
		}
		*wr = wrappers{}
		wrapperPool.put(wr)
	}()
	s.serve(wr, d, inner, info, body, &stats)
}

// wrappers are what ServeHTTP may wrap a response writer in, allocated
// together, and pooled: nothing holds a response writer once ServeHTTP
// has returned.
type wrappers struct {
	rec recorder
	dw  deadlineWriter
}

var wrapperPool = newBufPool[wrappers]()

// serve answers the request through wr.rec, and wr.dw when send_timeout
// applies, setting *stats to the series it is recorded in once it is
// routed: requests refused before routing count as unrouted. body is r's
// body as ServeHTTP wrapped it, nil without one.
func (s *Snapshot) serve(wr *wrappers, d deadliner, r *http.Request, info *reqinfo.Info, body *clientBody, stats **metrics.Route) {
	var w http.ResponseWriter = &wr.rec
	if status := s.overLimit(r); status != 0 {
		refuse(w, r, status)
		return
	}
	if needsCleaning(r.URL.Path) {
		// Resolve "." and ".." and merge slashes before matching, as nginx
		// does, so that neither "/public/../admin" nor "//admin" can miss
		// the "/admin" route (and its middlewares) and reach a backend that
		// resolves it to "/admin" behind the route's back.
		cleanPath(r.URL)
	}
	rt := s.routes.match(r.Host, r.URL.Path)
	if rt == nil {
		http.Error(w, "no route for this host and path", http.StatusNotFound)
		return
	}
	info.Route, info.Pool = rt.name, rt.pool
	*stats = rt.stats
	if rt.maxBody > 0 && body != nil {
		if r.ContentLength > rt.maxBody {
			s.log.Info("client request body failed", "request_id", info.RequestID, "route", rt.name, "pool", rt.pool, "status", http.StatusRequestEntityTooLarge,
				"content_length", r.ContentLength, "max_body_bytes", rt.maxBody)
			refuse(w, r, http.StatusRequestEntityTooLarge)
			return
		}
		body.limit(rt.maxBody)
	}
	if d != nil && s.sendTimeout > 0 {
		wr.dw.init(w, d, s.sendTimeout)
		w = &wr.dw
	}
	rt.handler.ServeHTTP(w, r)
}

// needsCleaning reports whether a path has a "." or ".." segment or an
// empty one ("//"), which cleanPath removes.
func needsCleaning(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			return true
		}
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

// cleanPath resolves dot segments and merges slashes, keeping a trailing
// slash.
func cleanPath(u *url.URL) {
	cleaned := path.Clean("/" + u.Path)
	if strings.HasSuffix(u.Path, "/") && cleaned != "/" {
		cleaned += "/"
	}
	u.Path, u.RawPath = cleaned, ""
}
