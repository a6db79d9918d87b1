package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/tlsmgr"
)

func testPools(t *testing.T) []*balancer.Pool {
	t.Helper()
	var bs []*balancer.Backend
	for i, host := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		b, err := balancer.NewBackend(&url.URL{Scheme: "http", Host: host}, i+1)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	p, err := balancer.NewPool("app", bs, balancer.Options{Policy: balancer.LeastConn})
	if err != nil {
		t.Fatal(err)
	}
	return []*balancer.Pool{p}
}

// request sends one request with the given headers (name, value pairs).
func request(t *testing.T, h http.Handler, path string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := request(t, h, path)
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestHealthz(t *testing.T) {
	if code, body := get(t, Handler(Options{}), "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
}

// /readyz follows the flag cmd sets once every listener is bound and
// clears when shutdown starts.
func TestReadyzFollowsTheFlag(t *testing.T) {
	var ready Readiness
	h := Handler(Options{Ready: &ready})
	for _, step := range []struct {
		set  *bool
		code int
	}{{nil, 503}, {ptr(true), 200}, {ptr(false), 503}} {
		if step.set != nil {
			ready.Set(*step.set)
		}
		if code, _ := get(t, h, "/readyz"); code != step.code {
			t.Errorf("GET /readyz = %d, want %d", code, step.code)
		}
	}
	if code, _ := get(t, Handler(Options{}), "/readyz"); code != 503 {
		t.Errorf("GET /readyz without a flag = %d, want 503", code)
	}
}

func ptr[T any](v T) *T { return &v }

// With a token, everything but the probes needs it, as a Bearer token or
// as the password of Basic authentication (what a browser sends).
func TestTokenGuardsEveryPathButProbes(t *testing.T) {
	const token = "0123456789abcdef-token"
	var ready Readiness
	ready.Set(true)
	h := Handler(Options{Token: func() string { return token }, Ready: &ready, Pools: func() []*balancer.Pool { return nil },
		Metrics: metrics.New("test"), Pprof: func() bool { return true }})
	for _, path := range []string{"/healthz", "/readyz"} {
		if rec := request(t, h, path); rec.Code != 200 {
			t.Errorf("GET %s without a token = %d, want 200", path, rec.Code)
		}
	}
	basic := func(user, pass string) string {
		req := httptest.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	for _, path := range []string{"/", "/ui/app.js", "/metrics", "/api/status", "/api/pools", "/api/history", "/debug/pprof/", "/nope"} {
		for _, bad := range []string{"", "Bearer", "Bearer wrong", "Bearer " + token + "x", "Token " + token, basic("admin", "wrong")} {
			rec := request(t, h, path, "Authorization", bad)
			if rec.Code != 401 || len(rec.Header().Values("WWW-Authenticate")) != 2 {
				t.Errorf("GET %s with Authorization %q = %d %v, want 401 with Bearer and Basic challenges", path, bad, rec.Code, rec.Header()["Www-Authenticate"])
			}
			if strings.Contains(rec.Body.String(), token) {
				t.Errorf("GET %s: the 401 shows the token", path)
			}
		}
		want := 200
		if path == "/nope" {
			want = 404
		}
		for _, good := range []string{"Bearer " + token, "bearer " + token, basic("admin", token)} {
			if rec := request(t, h, path, "Authorization", good); rec.Code != want {
				t.Errorf("GET %s with Authorization %q = %d, want %d", path, good, rec.Code, want)
			}
		}
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	if code, _ := get(t, Handler(Options{}), "/debug/pprof/"); code != 404 {
		t.Errorf("GET /debug/pprof/ by default = %d, want 404", code)
	}
	if code, body := get(t, Handler(Options{Pprof: func() bool { return true }}), "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/ with admin_pprof = %d, want the profile index", code)
	}
}

// /metrics speaks the classic text format and OpenMetrics, as asked.
func TestMetricsNegotiatesOpenMetrics(t *testing.T) {
	h := Handler(Options{Metrics: metrics.New("test")})
	rec := request(t, h, "/metrics")
	if ct := rec.Header().Get("Content-Type"); rec.Code != 200 || !strings.HasPrefix(ct, "text/plain; version=0.0.4") ||
		!strings.Contains(rec.Body.String(), "portico_build_info") {
		t.Errorf("GET /metrics = %d %q, want the text format with portico_build_info", rec.Code, ct)
	}
	rec = request(t, h, "/metrics", "Accept", "application/openmetrics-text;version=1.0.0")
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") ||
		!strings.HasSuffix(rec.Body.String(), "# EOF\n") {
		t.Errorf("GET /metrics for OpenMetrics = %q, want OpenMetrics ending in # EOF", ct)
	}
	if code, _ := get(t, Handler(Options{}), "/metrics"); code != 404 {
		t.Errorf("GET /metrics without metrics = %d, want 404", code)
	}
}

// /api/pools reads live state: a change to a backend shows on the next request.
func TestPoolsReflectLiveState(t *testing.T) {
	pools := testPools(t)
	h := Handler(Options{Pools: func() []*balancer.Pool { return pools }})
	bs := pools[0].Backends()
	b, err := pools[0].Acquire(context.Background(), balancer.Tried(0).Add(bs[0]))
	if err != nil || b != bs[1] {
		t.Fatalf("Acquire = %v, %v; want the second backend", b, err)
	}
	defer b.Release()
	b.SetUsable(false)

	code, body := get(t, h, "/api/pools")
	if code != 200 {
		t.Fatalf("GET /api/pools = %d", code)
	}
	var views []PoolView
	if err := json.Unmarshal([]byte(body), &views); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	type seen struct {
		URL      string
		Weight   int
		Usable   bool
		InFlight int64
	}
	want := []seen{{"http://10.0.0.1:80", 1, true, 0}, {"http://10.0.0.2:80", 2, false, 1}}
	if len(views) != 1 || views[0].Name != "app" || len(views[0].Backends) != len(want) {
		t.Fatalf("GET /api/pools = %+v, want pool app with 2 backends", views)
	}
	for i, bv := range views[0].Backends {
		if got := (seen{bv.URL, bv.Weight, bv.Usable, bv.InFlight}); got != want[i] {
			t.Errorf("backend %d = %+v, want %+v", i, got, want[i])
		}
	}
	if tr := views[0].Transitions; len(tr) != 1 || tr[0].Backend != "10.0.0.2:80" || tr[0].To != "down" {
		t.Errorf("transitions = %+v, want 10.0.0.2:80 up → down", tr)
	}
}

func TestStatusShowsEverything(t *testing.T) {
	const token = "do-not-show-this-token"
	cfg, err := config.Parse([]byte(`
[server]
admin_addr = ":9090"
admin_token = "`+token+`"
middlewares = ["rid"]
[middlewares.rid]
type = "request_id"
[middlewares.limit]
type = "rate_limit"
rate = 10
[pools.app]
backends = [{ url = "http://10.0.0.1:80" }, { url = "http://10.0.0.2:80" }]
[[routes]]
name = "api"
host = "example.com"
path_prefix = "/api"
strip_prefix = true
pool = "app"
middlewares = ["limit"]
`), "portico.toml")
	if err != nil {
		t.Fatal(err)
	}
	pools := testPools(t)
	m := metrics.New("v1.2.3")
	m.ConfigReload(false, time.Now())
	soon := time.Now().Add(10 * 24 * time.Hour)
	var ready Readiness
	ready.Set(true)
	h := Handler(Options{
		Version: "v1.2.3", Started: time.Now().Add(-time.Minute), Config: func() *config.Config { return cfg },
		Pools: func() []*balancer.Pool { return pools }, Metrics: m, Ready: &ready,
		Listeners: func() []Listener { return []Listener{{"http", "127.0.0.1:8080"}} },
		Certificates: func() []tlsmgr.CertInfo {
			return []tlsmgr.CertInfo{{Names: []string{"example.com"}, Source: "static", NotAfter: soon}}
		},
	})
	code, body := get(t, h, "/api/status")
	if code != 200 {
		t.Fatalf("GET /api/status = %d", code)
	}
	if strings.Contains(body, token) {
		t.Errorf("/api/status shows the admin token:\n%s", body)
	}
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	switch {
	case s.Version != "v1.2.3" || s.UptimeSeconds < 59 || !s.Ready:
		t.Errorf("version %q, uptime %v, ready %v", s.Version, s.UptimeSeconds, s.Ready)
	case s.Config.File != "portico.toml" || s.Config.SHA256 != cfg.Checksum || len(s.Config.SHA256) != 64 ||
		s.Config.Routes != 1 || s.Config.Pools != 1 || s.Config.Backends != 2:
		t.Errorf("config = %+v", s.Config)
	case s.LastReload == nil || s.LastReload.OK:
		t.Errorf("last_reload = %+v, want the failed reload", s.LastReload)
	case len(s.Listeners) != 1 || s.Listeners[0].Addr != "127.0.0.1:8080":
		t.Errorf("listeners = %+v", s.Listeners)
	case len(s.Routes) != 1 || s.Routes[0].Name != "api" || s.Routes[0].Host != "example.com" ||
		s.Routes[0].PathPrefix != "/api" || !s.Routes[0].StripPrefix || s.Routes[0].Pool != "app" || strings.Join(s.Routes[0].Middlewares, ",") != "rid,limit":
		t.Errorf("routes = %+v", s.Routes)
	case len(s.Pools) != 1 || len(s.Pools[0].Backends) != 2 || s.Pools[0].Transitions == nil:
		t.Errorf("pools = %+v", s.Pools)
	case len(s.Certificates) != 1 || s.Certificates[0].Names[0] != "example.com" || s.Certificates[0].Source != "static" ||
		s.Certificates[0].DaysLeft < 9.9 || s.Certificates[0].DaysLeft > 10:
		t.Errorf("certificates = %+v", s.Certificates)
	}
}

// The dashboard is one page with its own scripts and styles, nothing from
// elsewhere, and may not be framed.
func TestDashboardIsSelfContained(t *testing.T) {
	h := Handler(Options{})
	rec := request(t, h, "/")
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "<title>Portico</title>") {
		t.Fatalf("GET / = %d, want the dashboard", rec.Code)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, "//cdn") {
		t.Errorf("the page refers to another origin:\n%s", body)
	}
	for _, asset := range []string{"/ui/app.js", "/ui/style.css", "/ui/vendor/uPlot.iife.min.js", "/ui/vendor/uPlot.min.css", "/ui/vendor/uPlot.LICENSE"} {
		if !strings.Contains(body, asset) && !strings.HasSuffix(asset, "LICENSE") {
			t.Errorf("the page does not load %s", asset)
		}
		if rec := request(t, h, asset); rec.Code != 200 || rec.Body.Len() < 100 {
			t.Errorf("GET %s = %d, %d bytes", asset, rec.Code, rec.Body.Len())
		}
	}
}
