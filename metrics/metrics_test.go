package metrics

import (
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/internal/promtest"
	"github.com/portico/portico/tlsmgr"
)

// value sums the series of family whose labels include labels; -1 when
// there is none.
func value(t *testing.T, m *Metrics, family string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	return promtest.Sum(mfs, family, labels...)
}

func TestRouteObserveByMethodAndClass(t *testing.T) {
	m := New("test")
	r := m.Route("api")
	if m.Route("api") != r {
		t.Error("the same route name gave a second handle")
	}
	for _, c := range []struct {
		method string
		status int
	}{{"GET", 200}, {"GET", 204}, {"POST", 502}, {"BREW", 418}, {"get", 499}, {"OPTIONS", 101}, {"HEAD", 304}} {
		r.Observe(c.method, c.status, 3*time.Millisecond, 100)
	}
	for _, w := range []struct {
		method, class string
		n             float64
	}{{"GET", "2xx", 2}, {"POST", "5xx", 1}, {"other", "4xx", 2}, {"OPTIONS", "1xx", 1}, {"HEAD", "3xx", 1}, {"PUT", "2xx", -1}} {
		if got := value(t, m, "portico_requests_total", "route", "api", "method", w.method, "status_class", w.class); got != w.n {
			t.Errorf("requests{%s,%s} = %v, want %v", w.method, w.class, got, w.n)
		}
	}
	if got := value(t, m, "portico_request_duration_seconds", "route", "api"); got != 7 {
		t.Errorf("duration count = %v, want 7", got)
	}
	if got := value(t, m, "portico_response_bytes_total", "route", "api"); got != 700 {
		t.Errorf("response bytes = %v, want 700", got)
	}
	var nilRoute *Route
	nilRoute.Observe("GET", 200, time.Millisecond, 1) // metrics off: no panic
	var nilMetrics *Metrics
	if nilMetrics.Route("x") != nil || nilMetrics.Pool("p", []string{"a:1"}) != nil {
		t.Error("nil Metrics gave handles")
	}
}

func TestPoolAttemptsAndRetries(t *testing.T) {
	m := New("test")
	p := m.Pool("app", []string{"10.0.0.1:80", "10.0.0.2:80"})
	// Every backend's series exist from the start, at zero.
	if got := value(t, m, "portico_backend_requests_total", "backend", "10.0.0.2:80", "status_class", "error"); got != 0 {
		t.Errorf("error attempts before any = %v, want 0", got)
	}
	p.Attempt(0, 200, 2*time.Millisecond)
	p.Attempt(1, 503, time.Millisecond)
	p.Attempt(1, 0, time.Second)
	p.Attempt(7, 200, time.Millisecond) // no such backend: ignored
	p.Retry()
	for _, w := range []struct {
		backend, class string
		n              float64
	}{{"10.0.0.1:80", "2xx", 1}, {"10.0.0.2:80", "5xx", 1}, {"10.0.0.2:80", "error", 1}, {"10.0.0.1:80", "error", 0}} {
		if got := value(t, m, "portico_backend_requests_total", "pool", "app", "backend", w.backend, "status_class", w.class); got != w.n {
			t.Errorf("backend requests{%s,%s} = %v, want %v", w.backend, w.class, got, w.n)
		}
	}
	// Time to first byte only for attempts that got a response.
	if got := value(t, m, "portico_backend_ttfb_seconds", "backend", "10.0.0.2:80"); got != 1 {
		t.Errorf("ttfb count = %v, want 1", got)
	}
	if got := value(t, m, "portico_retries_total", "pool", "app"); got != 1 {
		t.Errorf("retries = %v, want 1", got)
	}
}

// Backend state is read from balancer when scraped, whatever changed it.
func TestBackendStateAtScrapeTime(t *testing.T) {
	var bs []*balancer.Backend
	for _, h := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		b, _ := balancer.NewBackend(&url.URL{Scheme: "http", Host: h}, 1)
		bs = append(bs, b)
	}
	pool, err := balancer.NewPool("app", bs, balancer.Options{Passive: balancer.Passive{MaxFails: 1, FailTimeout: time.Minute, MaxEjectedPercent: 100}})
	if err != nil {
		t.Fatal(err)
	}
	m := New("test")
	m.WatchPools(func() []*balancer.Pool { return []*balancer.Pool{pool} })
	if got := value(t, m, "portico_pool_backends_usable", "pool", "app"); got != 2 {
		t.Errorf("usable = %v, want 2", got)
	}
	bs[0].RecordCheck(balancer.Check{OK: false, Detail: "connection refused"})
	bs[0].SetUsable(false)
	bs[1].Report(balancer.Failure, time.Millisecond)
	b, err := pool.Acquire(t.Context(), 0)
	if err == nil {
		defer b.Release()
	}
	for _, w := range []struct {
		family string
		labels []string
		want   float64
	}{
		{"portico_backend_up", []string{"backend", "10.0.0.1:80"}, 0},
		{"portico_backend_up", []string{"backend", "10.0.0.2:80"}, 0},
		{"portico_pool_backends_usable", []string{"pool", "app"}, 0},
		{"portico_pool_backends", []string{"pool", "app"}, 2},
		{"portico_backend_ejections_total", []string{"backend", "10.0.0.2:80", "reason", "error"}, 1},
		{"portico_backend_ejections_total", []string{"backend", "10.0.0.2:80", "reason", "5xx"}, 0},
		{"portico_health_probes_total", []string{"backend", "10.0.0.1:80", "result", "fail"}, 1},
		{"portico_health_probes_total", []string{"backend", "10.0.0.1:80", "result", "pass"}, 0},
		{"portico_backend_in_flight_requests", []string{"backend", "10.0.0.1:80"}, 0},
	} {
		if got := value(t, m, w.family, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.family, w.labels, got, w.want)
		}
	}
}

// A name two certificates cover reports the one that expires first.
func TestCertificateExpiryByName(t *testing.T) {
	m := New("test")
	soon, later := time.Unix(1_900_000_000, 0), time.Unix(1_950_000_000, 0)
	m.WatchCertificates(func() []tlsmgr.CertInfo {
		return []tlsmgr.CertInfo{
			{Names: []string{"a.example.com", "b.example.com"}, Source: "static", NotAfter: later},
			{Names: []string{"A.example.com"}, Source: "static", NotAfter: soon},
			{Names: []string{"a.example.com"}, Source: "acme", NotAfter: later},
		}
	})
	for _, w := range []struct {
		name, source string
		want         time.Time
	}{{"a.example.com", "static", soon}, {"b.example.com", "static", later}, {"a.example.com", "acme", later}} {
		if got := value(t, m, "portico_certificate_expiry_timestamp_seconds", "name", w.name, "source", w.source); got != float64(w.want.Unix()) {
			t.Errorf("expiry{%s,%s} = %v, want %v", w.name, w.source, got, w.want.Unix())
		}
	}
}

func TestReloadsDropsAndRejections(t *testing.T) {
	m := New("v9")
	if got := value(t, m, "portico_config_last_reload_successful"); got != 1 {
		t.Errorf("last reload successful at start = %v, want 1 (the configuration loaded)", got)
	}
	if m.LastReload() != nil {
		t.Error("a reload before any")
	}
	at := time.Unix(1_800_000_000, 0)
	m.ConfigReload(true, at)
	m.ConfigReload(false, at.Add(time.Minute))
	if got := value(t, m, "portico_config_last_reload_successful"); got != 0 {
		t.Errorf("last reload successful = %v, want 0", got)
	}
	if got := value(t, m, "portico_config_last_reload_success_timestamp_seconds"); got != float64(at.Unix()) {
		t.Errorf("last success = %v, want %v", got, at.Unix())
	}
	if value(t, m, "portico_config_reloads_total", "result", "success") != 1 || value(t, m, "portico_config_reloads_total", "result", "failure") != 1 {
		t.Error("reloads not counted by result")
	}
	if r := m.LastReload(); r == nil || r.OK || !r.Time.Equal(at.Add(time.Minute)) {
		t.Errorf("LastReload = %+v", r)
	}

	var dropped uint64 = 7
	m.WatchAccessLogDrops(func() uint64 { return dropped })
	if got := value(t, m, "portico_access_log_dropped_total"); got != 7 {
		t.Errorf("dropped = %v, want 7", got)
	}
	m.Rejections("auth", "unauthorized").Inc()
	if got := value(t, m, "portico_rejections_total", "middleware", "auth", "reason", "unauthorized"); got != 1 {
		t.Errorf("rejections = %v, want 1", got)
	}
	if got := value(t, m, "portico_build_info", "version", "v9"); got != 1 {
		t.Errorf("build info = %v", got)
	}
}

// Every family passes the Prometheus linter, with data in all of them.
func TestMetricsLint(t *testing.T) {
	m := New("test")
	m.Route("api").Observe("GET", 200, time.Millisecond, 10)
	m.Pool("app", []string{"10.0.0.1:80"}).Attempt(0, 200, time.Millisecond)
	m.Rejections("auth", "unauthorized").Inc()
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "portico_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// Histograms carry native buckets too, for scrapers that negotiate them.
func TestHistogramsAreNative(t *testing.T) {
	m := New("test")
	m.Route("api").Observe("GET", 200, 3*time.Millisecond, 0)
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_HISTOGRAM || !strings.HasPrefix(mf.GetName(), "portico_request_duration") {
			continue
		}
		h := mf.Metric[0].Histogram
		if len(h.Bucket) != len(latencyBuckets) || h.Schema == nil || len(h.PositiveSpan) == 0 {
			t.Errorf("histogram: %d classic buckets, schema %v, %d native spans", len(h.Bucket), h.Schema, len(h.PositiveSpan))
		}
		return
	}
	t.Error("no request duration histogram")
}

func TestLatencyBuckets(t *testing.T) {
	last := -1
	for d := time.Duration(0); d < 48*time.Hour; d = d*21/20 + time.Microsecond {
		i := bucketOf(d)
		if i < last || i >= numBuckets {
			t.Fatalf("bucketOf(%v) = %d after %d", d, i, last)
		}
		last = i
		if ms := float64(d) / 1e6; d >= 16*time.Microsecond && math.Abs(bucketMiddle(i)-ms)/ms > 0.07 {
			t.Errorf("bucketOf(%v) = %d, whose middle %.4f ms is more than 7%% off", d, i, bucketMiddle(i))
		}
	}
	if bucketOf(-time.Second) != 0 || bucketOf(1000*time.Hour) != numBuckets-1 {
		t.Error("out-of-range durations are not clamped")
	}
}

// Each second of history holds that second's requests, errors and
// percentiles; summaries cover blocks of seconds; the overview sums routes.
func TestHistoryAndSummaries(t *testing.T) {
	m := New("test")
	a, b := m.Route("a"), m.Route("b")
	for i := range 100 {
		a.Observe("GET", 200, time.Duration(i+1)*time.Millisecond, 0) // 1..100 ms
	}
	b.Observe("GET", 500, 50*time.Millisecond, 0)
	m.tick(1000)
	for s := int64(1001); s < 1000+summaryEvery; s++ {
		m.tick(s)
	}
	h := m.History("a")
	if len(h) != summaryEvery || h[0].Time != 1000 || h[0].Requests != 100 || h[1].Requests != 0 {
		t.Fatalf("history of a = %+v", h[:2])
	}
	near := func(got float32, want float64) bool { return math.Abs(float64(got)-want)/want < 0.07 }
	if p := h[0]; !near(p.P50, 50) || !near(p.P95, 95) || !near(p.P99, 99) {
		t.Errorf("percentiles = %v %v %v, want about 50 95 99", p.P50, p.P95, p.P99)
	}
	all := m.History("")
	if all[0].Requests != 101 || all[0].Errors != 1 {
		t.Errorf("overview = %+v, want 101 requests, 1 error", all[0])
	}
	sums := m.Summaries()
	if s := sums["b"]; s.Rate != 0.1 || s.Errors != 1 {
		t.Errorf("summary of b = %+v, want 0.1/s, all errors", s)
	}
	if s := sums[""]; s.Rate != 10.1 || math.Abs(s.Errors-1.0/101) > 1e-9 {
		t.Errorf("overview summary = %+v", s)
	}
	if m.History("nope") != nil {
		t.Error("history of an unknown route")
	}
	for s := int64(2000); s < 2000+HistorySeconds+5; s++ {
		m.tick(s)
	}
	if h := m.History("a"); len(h) != HistorySeconds || h[len(h)-1].Time != 2000+HistorySeconds+4 {
		t.Errorf("history keeps %d points, last at %d", len(h), h[len(h)-1].Time)
	}
}

// Recording a request or an attempt allocates nothing.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New("test")
	r, p := m.Route("api"), m.Pool("app", []string{"10.0.0.1:80"})
	r.Observe("GET", 200, time.Millisecond, 10) // resolve the counter
	allocs := testing.AllocsPerRun(1000, func() {
		r.Observe("GET", 200, 1234*time.Microsecond, 100)
		p.Attempt(0, 200, 1234*time.Microsecond)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request, want 0", allocs)
	}
}

func BenchmarkRecord(b *testing.B) {
	m := New("bench")
	r, p := m.Route("api"), m.Pool("app", []string{"10.0.0.1:80"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := 1234 * time.Microsecond
		for pb.Next() {
			r.Observe("GET", 200, d, 100)
			p.Attempt(0, 200, d)
		}
	})
}

var _ prometheus.Collector = stateCollector{}

// A reload that removes routes, pools, backends and middlewares drops their
// series; what stays keeps its counts.
func TestRetainDropsRemovedSeries(t *testing.T) {
	m := New("test")
	for _, route := range []string{"kept", "gone"} {
		m.Route(route).Observe("GET", 200, time.Millisecond, 10)
	}
	m.Pool("app", []string{"a:80", "b:80"}).Attempt(1, 200, time.Millisecond)
	m.Pool("old", []string{"c:80"}).Retry()
	m.Rejections("limit", "rate_limited").Inc()
	m.Rejections("auth", "unauthorized").Inc()

	m.Retain(Kept{Routes: []string{"kept"}, Pools: map[string][]string{"app": {"a:80"}}, Middlewares: []string{"auth"}})
	for _, c := range []struct {
		family string
		labels []string
		want   float64
	}{
		{"portico_requests_total", []string{"route", "kept"}, 1},
		{"portico_requests_total", []string{"route", "gone"}, -1},
		{"portico_request_duration_seconds", []string{"route", "gone"}, -1},
		{"portico_response_bytes_total", []string{"route", "gone"}, -1},
		{"portico_backend_requests_total", []string{"pool", "app", "backend", "a:80"}, 0},
		{"portico_backend_requests_total", []string{"pool", "app", "backend", "b:80"}, -1},
		{"portico_backend_ttfb_seconds", []string{"pool", "app", "backend", "b:80"}, -1},
		{"portico_retries_total", []string{"pool", "old"}, -1},
		{"portico_backend_requests_total", []string{"pool", "old"}, -1},
		{"portico_rejections_total", []string{"middleware", "auth"}, 1},
		{"portico_rejections_total", []string{"middleware", "limit"}, -1},
	} {
		if got := value(t, m, c.family, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v (-1: no series)", c.family, c.labels, got, c.want)
		}
	}
	if h := m.History("gone"); len(h) != 0 {
		t.Errorf("history of a removed route: %d points, want none", len(h))
	}
}
