// Package metrics owns Portico's Prometheus collectors and the short
// in-memory history behind the admin dashboard.
//
// The request path reaches its series through handles resolved when a
// snapshot is built (Route, Pool, Backend): recording a request is a few
// atomic additions and never looks a label set up. State that already lives
// elsewhere (backend health, in-flight counts, certificates, access-log
// drops) is read when Prometheus scrapes, not copied per request.
//
// Every Metrics has its own registry, so tests and several instances in
// one process stay apart. It never imports proxy or middleware: proxy
// records into it, and middlewares get counters from it at build time.
package metrics

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/tlsmgr"
)

// Metrics holds the collectors of one Portico process.
type Metrics struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec   // route, method, status_class
	duration    *prometheus.HistogramVec // route
	bytesOut    *prometheus.CounterVec   // route
	backendReqs *prometheus.CounterVec   // pool, backend, status_class
	ttfb        *prometheus.HistogramVec // pool, backend
	retries     *prometheus.CounterVec   // pool
	rejections  *prometheus.CounterVec   // middleware, reason
	redisErrors *prometheus.CounterVec   // operation
	fallbacks   *prometheus.CounterVec   // middleware
	connsOpen   *prometheus.GaugeVec     // listener, protocol
	connsTotal  *prometheus.CounterVec   // listener, protocol
	handshakes  *prometheus.CounterVec   // result
	reloads     *prometheus.CounterVec   // result
	reloadOK    prometheus.Gauge
	reloadAt    prometheus.Gauge

	// Sources read at scrape time; set by cmd, possibly replaced on reload.
	pools   atomic.Pointer[func() []*balancer.Pool]
	certs   atomic.Pointer[func() []tlsmgr.CertInfo]
	dropped atomic.Pointer[func() uint64]
	refused atomic.Pointer[func() (overTotal, overPerIP uint64)]

	lastReload atomic.Pointer[Reload]

	mu        sync.Mutex
	routes    map[string]*Route          // by name, so that a reload keeps a route's series and history
	all       *window                    // every request, routed or not, for the dashboard's overview
	seenPools map[string]map[string]bool // pool → backends with series, for Retain
	seenMWs   map[string]bool            // middlewares with series, for Retain
}

// Unrouted is the route label of requests that matched no route. Route
// names cannot contain parentheses, so it never clashes with one.
const Unrouted = "(none)"

// Status classes and methods: the only values of those labels.
var (
	classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}
	methods = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
)

// Backend attempts without a response (refused, reset, timed out) are
// counted under this status class.
const classError = "error"

// latencyBuckets are the classic histogram buckets, in seconds: from a fast
// local backend to a slow report. Scrapers that ask for native histograms
// get buckets 10% wide instead.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

func histogramOpts(name, help string) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Name: name, Help: help, Buckets: latencyBuckets,
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}
}

// New returns the collectors of one process, registered with Go runtime and
// process collectors on a registry of their own. version goes into
// portico_build_info.
func New(version string) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		routes:    map[string]*Route{},
		all:       newWindow(),
		seenPools: map[string]map[string]bool{},
		seenMWs:   map[string]bool{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_requests_total", Help: "Requests answered, by route, method and status class.",
		}, []string{"route", "method", "status_class"}),
		duration: prometheus.NewHistogramVec(histogramOpts("portico_request_duration_seconds",
			"Time from a request's arrival to the end of its response, by route."), []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_response_bytes_total", Help: "Response body bytes sent to clients, by route.",
		}, []string{"route"}),
		backendReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_backend_requests_total",
			Help: "Attempts sent to backends, by pool, backend and status class; \"error\" when no response came.",
		}, []string{"pool", "backend", "status_class"}),
		ttfb: prometheus.NewHistogramVec(histogramOpts("portico_backend_ttfb_seconds",
			"Time from sending a request to a backend to its response headers."), []string{"pool", "backend"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_retries_total", Help: "Requests sent again to another backend, by pool.",
		}, []string{"pool"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_rejections_total", Help: "Requests refused by a middleware, by middleware and reason.",
		}, []string{"middleware", "reason"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_redis_errors_total",
			Help: "Calls to the shared Redis ([cluster]) that failed or timed out, by operation (rate_limit, storage, lock).",
		}, []string{"operation"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_rate_limit_fallbacks_total",
			Help: "Decisions of global rate limits made without Redis (by on_redis_error), by middleware.",
		}, []string{"middleware"}),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_connections_open", Help: "Client connections open, by listener and protocol.",
		}, []string{"listener", "protocol"}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_connections_total", Help: "Client connections served, by listener and protocol.",
		}, []string{"listener", "protocol"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_tls_handshakes_total", Help: "TLS handshakes with clients, by result.",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_config_reloads_total", Help: "Configuration reloads, by result.",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_config_last_reload_successful", Help: "1 if the last configuration load or reload succeeded.",
		}),
		reloadAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_config_last_reload_success_timestamp_seconds", Help: "When the configuration in force was loaded, as a Unix time.",
		}),
	}
	// The configuration in force was loaded when the process started.
	m.reloadOK.Set(1)
	m.reloadAt.SetToCurrentTime()
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed"} {
		m.handshakes.WithLabelValues(r)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portico_build_info", Help: "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()},
	})
	buildInfo.Set(1)
	dropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "portico_access_log_dropped_total", Help: "Access-log lines dropped because the writer could not keep up.",
	}, func() float64 {
		if f := m.dropped.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	refused := func(perIP bool) func() float64 {
		return func() float64 {
			f := m.refused.Load()
			if f == nil {
				return 0
			}
			total, ip := (*f)()
			if perIP {
				return float64(ip)
			}
			return float64(total)
		}
	}
	refusedOpts := func(reason string) prometheus.CounterOpts {
		return prometheus.CounterOpts{
			Name:        "portico_connections_refused_total",
			Help:        "Client connections closed at accept by max_conns or max_conns_per_ip, by reason.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(refusedOpts("max_conns"), refused(false)),
		prometheus.NewCounterFunc(refusedOpts("max_conns_per_ip"), refused(true)),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.duration, m.bytesOut, m.backendReqs, m.ttfb, m.retries, m.rejections, m.redisErrors, m.fallbacks,
		m.connsOpen, m.connsTotal, m.handshakes, m.reloads, m.reloadOK, m.reloadAt,
		buildInfo, dropped, stateCollector{m},
	)
	return m
}

// Handler serves the metrics in the format the scraper asks for: the
// Prometheus text format, OpenMetrics, or protobuf, which alone carries
// native histograms.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorHandling: promhttp.ContinueOnError})
}

// Registry is where the collectors are registered, for tests and for
// gathering in-process.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// WatchPools sets where backend state is read at scrape time: the pools of
// the snapshot in force.
func (m *Metrics) WatchPools(f func() []*balancer.Pool) { m.pools.Store(&f) }

// WatchCertificates sets where the certificates in use are read at scrape time.
func (m *Metrics) WatchCertificates(f func() []tlsmgr.CertInfo) { m.certs.Store(&f) }

// WatchConnLimit sets the counts of client connections refused at accept
// (proxy.ConnLimit's Refused), read at scrape time.
func (m *Metrics) WatchConnLimit(f func() (overTotal, overPerIP uint64)) { m.refused.Store(&f) }

// WatchAccessLogDrops sets the counter of access-log lines dropped, read at
// scrape time (the access logger's Dropped method).
func (m *Metrics) WatchAccessLogDrops(f func() uint64) { m.dropped.Store(&f) }

// Rejections returns the counter a middleware increments when it refuses a
// request for reason (unauthorized, forbidden, rate_limited,
// over_concurrency, auth_unavailable). Middlewares resolve it when they are
// built.
func (m *Metrics) Rejections(middleware, reason string) prometheus.Counter {
	m.sawMiddleware(middleware)
	return m.rejections.WithLabelValues(middleware, reason)
}

// RedisErrors returns the counter of failed calls to the shared Redis for
// one operation (rate_limit, storage, lock); package cluster resolves it
// when its client is made.
func (m *Metrics) RedisErrors(operation string) prometheus.Counter {
	return m.redisErrors.WithLabelValues(operation)
}

// RateLimitFallbacks returns the counter of a global rate limit's
// decisions made without Redis; resolved when the middleware is built.
func (m *Metrics) RateLimitFallbacks(middleware string) prometheus.Counter {
	m.sawMiddleware(middleware)
	return m.fallbacks.WithLabelValues(middleware)
}

// WatchRedis exports portico_redis_up, read from up at scrape time. It is
// called once, when there is a [cluster]; without one the gauge is absent.
func (m *Metrics) WatchRedis(up func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portico_redis_up",
		Help: "1 while global rate limits are decided in the shared Redis, 0 while its circuit breaker is open.",
	}, func() float64 {
		if up() {
			return 1
		}
		return 0
	}))
	for _, op := range []string{"rate_limit", "storage", "lock"} {
		m.redisErrors.WithLabelValues(op) // zero from the start, for rate()
	}
}

// Reload is the outcome of the last configuration reload.
type Reload struct {
	Time time.Time
	OK   bool
}

// ConfigReload records a configuration reload: its result, and when it
// succeeded, the time the new configuration came into force.
func (m *Metrics) ConfigReload(ok bool, at time.Time) {
	m.lastReload.Store(&Reload{Time: at, OK: ok})
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		m.reloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.reloadOK.Set(1)
	m.reloadAt.Set(float64(at.UnixNano()) / 1e9)
}

// LastReload returns the last reload, or nil when there was none.
func (m *Metrics) LastReload() *Reload { return m.lastReload.Load() }
