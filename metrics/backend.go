package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Pool is one pool's per-attempt series, resolved when a snapshot is built.
// A nil *Pool records nothing.
type Pool struct {
	retries  prometheus.Counter
	backends []*Backend // by balancer.Backend.Index
}

// Backend is one backend's per-attempt series. Its counters exist from the
// start, at zero, so that rates over them work before the first failure.
type Backend struct {
	requests [len(classes) + 1]prometheus.Counter // by status class, then "error"
	ttfb     prometheus.Observer
}

// Pool returns the series of pool name, whose backends are given as
// host:port in the pool's order.
func (m *Metrics) Pool(name string, backends []string) *Pool {
	if m == nil {
		return nil
	}
	m.sawPool(name, backends)
	p := &Pool{retries: m.retries.WithLabelValues(name), backends: make([]*Backend, len(backends))}
	for i, host := range backends {
		b := &Backend{ttfb: m.ttfb.WithLabelValues(name, host)}
		for ci, class := range classes {
			b.requests[ci] = m.backendReqs.WithLabelValues(name, host, class)
		}
		b.requests[len(classes)] = m.backendReqs.WithLabelValues(name, host, classError)
		p.backends[i] = b
	}
	return p
}

// Retry records that a request is sent again to another backend.
func (p *Pool) Retry() {
	if p != nil {
		p.retries.Inc()
	}
}

// Attempt records one attempt on the pool's backend at index: the status of
// its response and the time to its headers, or status 0 when no response
// came.
func (p *Pool) Attempt(backend, status int, ttfb time.Duration) {
	if p == nil || backend >= len(p.backends) {
		return
	}
	b := p.backends[backend]
	if status == 0 {
		b.requests[len(classes)].Inc()
		return
	}
	b.requests[classIndex(status)].Inc()
	b.ttfb.Observe(ttfb.Seconds())
}

// Backend state, read from balancer when Prometheus scrapes.
var (
	descUp = prometheus.NewDesc("portico_backend_up",
		"1 if the backend takes traffic: not down by active checks, not ejected.", []string{"pool", "backend"}, nil)
	descInFlight = prometheus.NewDesc("portico_backend_in_flight_requests",
		"Requests a backend is serving now.", []string{"pool", "backend"}, nil)
	descEjections = prometheus.NewDesc("portico_backend_ejections_total",
		"Passive ejections, by reason: \"error\" (no response) or \"5xx\" (with fail_on_5xx).", []string{"pool", "backend", "reason"}, nil)
	descProbes = prometheus.NewDesc("portico_health_probes_total",
		"Active health probes, by result: pass or fail.", []string{"pool", "backend", "result"}, nil)
	descUsable = prometheus.NewDesc("portico_pool_backends_usable",
		"Backends of a pool that take traffic now.", []string{"pool"}, nil)
	descBackends = prometheus.NewDesc("portico_pool_backends",
		"Backends configured in a pool.", []string{"pool"}, nil)
	descCertExpiry = prometheus.NewDesc("portico_certificate_expiry_timestamp_seconds",
		"When a certificate in use expires, as a Unix time, by name and source (static or acme).", []string{"name", "source"}, nil)
)

// stateCollector reads backend and certificate state at scrape time. Series
// of pools or backends that a reload removed simply stop being reported.
type stateCollector struct{ m *Metrics }

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descInFlight, descEjections, descProbes, descUsable, descBackends, descCertExpiry} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectPools(ch)
	c.collectCertificates(ch)
}

func (c stateCollector) collectPools(ch chan<- prometheus.Metric) {
	f := c.m.pools.Load()
	if f == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, p := range (*f)() {
		ps := p.State()
		gauge(descUsable, float64(ps.Usable), ps.Name)
		gauge(descBackends, float64(len(ps.Backends)), ps.Name)
		for i, b := range p.Backends() {
			s, host := &ps.Backends[i], b.URL().Host
			up := 0.0
			if s.Usable {
				up = 1
			}
			gauge(descUp, up, ps.Name, host)
			gauge(descInFlight, float64(s.InFlight), ps.Name, host)
			counter(descEjections, s.Ejections-s.Ejected5xx, ps.Name, host, "error")
			counter(descEjections, s.Ejected5xx, ps.Name, host, "5xx")
			counter(descProbes, s.ProbesOK, ps.Name, host, "pass")
			counter(descProbes, s.ProbesFail, ps.Name, host, "fail")
		}
	}
}

// collectCertificates reports each name once per source; a name that two
// certificates cover reports the sooner expiry, the one to act on.
func (c stateCollector) collectCertificates(ch chan<- prometheus.Metric) {
	f := c.m.certs.Load()
	if f == nil {
		return
	}
	type key struct{ name, source string }
	expiry := map[key]time.Time{}
	for _, cert := range (*f)() {
		for _, n := range cert.Names {
			k := key{strings.ToLower(n), cert.Source}
			if t, ok := expiry[k]; !ok || cert.NotAfter.Before(t) {
				expiry[k] = cert.NotAfter
			}
		}
	}
	for k, t := range expiry {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(t.Unix()), k.name, k.source)
	}
}
