package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/promtest"
	"github.com/portico/portico/internal/testcert"
)

// scrape fetches the admin listener's /metrics and parses it.
func scrape(t *testing.T, adminAddr string) map[string]*dto.MetricFamily {
	t.Helper()
	res, body := get(t, "http://"+adminAddr+"/metrics")
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d", res.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// sample sums the series of family whose labels include labels.
func sample(mfs map[string]*dto.MetricFamily, family string, labels ...string) float64 {
	return promtest.Sum(slices.Collect(maps.Values(mfs)), family, labels...)
}

// observedPortico runs Portico with HTTPS, two pools and health checks in
// front of real backends, for the metrics and dashboard tests.
type observedPortico struct {
	addrs         listenAddrs
	web, spare    *upstream // pool web, actively checked
	dead, flaky   *upstream // pool flaky: dead refuses connections
	release       chan struct{}
	client, https *http.Client
}

func startObserved(t *testing.T) *observedPortico {
	t.Helper()
	o := &observedPortico{release: make(chan struct{})}
	handler := func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "broken", http.StatusInternalServerError)
		case "/slow":
			select {
			case <-o.release:
			case <-r.Context().Done():
			}
		default:
			_, _ = io.WriteString(w, "hello from "+r.URL.Path)
		}
	}
	o.web = startUpstream(t, "web", handler)
	o.spare = startUpstream(t, "spare", handler)
	o.dead = startUpstream(t, "dead", handler)
	o.dead.kill()
	o.flaky = startUpstream(t, "flaky", handler)
	t.Cleanup(func() {
		select {
		case <-o.release:
		default:
			close(o.release)
		}
	})

	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Valid(t, "web.test").WriteFiles(t, t.TempDir(), "web")
	cfg, err := config.Parse(fmt.Appendf(nil, `
[server]
http_addr = "127.0.0.1:0"
https_addr = "127.0.0.1:0"
redirect_http = false
admin_addr = "127.0.0.1:0"
shutdown_timeout = "5s"
[[tls.certificates]]
cert_file = %q
key_file = %q
[pools.web]
backends = %s
[pools.web.health]
interval = "100ms"
timeout = "100ms"
fall = 1
rise = 1
[pools.flaky]
backends = %s
retries = 1
[pools.flaky.passive]
max_fails = 1
[[routes]]
name = "web"
host = "web.test"
pool = "web"
[[routes]]
name = "flaky"
host = "flaky.test"
pool = "flaky"
`, certFile, keyFile, backendList(o.web, o.spare), backendList(o.dead, o.flaky)), "observed.toml")
	if err != nil {
		t.Fatal(err)
	}
	o.addrs = runServe(t, cfg)
	o.client = &http.Client{Timeout: 5 * time.Second}
	o.https = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "web.test"},
	}}
	t.Cleanup(o.https.CloseIdleConnections)
	return o
}

// send makes one request through the plain listener with the given Host.
func (o *observedPortico) send(t *testing.T, host, path string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+o.addrs.http+path, nil)
	req.Host = host
	res, err := o.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// Each family moves when its event happens, and /metrics passes as
// Prometheus reads it.
func TestMetricsFamiliesMove(t *testing.T) {
	o := startObserved(t)
	before := scrape(t, o.addrs.admin)

	o.send(t, "web.test", "/")
	o.send(t, "web.test", "/fail")
	o.send(t, "nowhere.test", "/")
	for range 4 { // round robin: the dead backend comes first at least once
		if code := o.send(t, "flaky.test", "/"); code != 200 {
			t.Errorf("flaky.test: %d, want 200 after a retry", code)
		}
	}
	res, err := o.https.Get("https://" + o.addrs.https + "/")
	if err != nil || res.ProtoMajor != 2 {
		t.Fatalf("GET over HTTPS: %v", err)
	}
	res.Body.Close()
	slow := make(chan int)
	go func() { slow <- o.send(t, "web.test", "/slow") }()
	waitUntil(t, "a request in flight", func() bool {
		return sample(scrape(t, o.addrs.admin), "portico_backend_in_flight_requests", "pool", "web") == 1
	})
	o.spare.kill()
	waitUntil(t, "the killed backend down", func() bool {
		return sample(scrape(t, o.addrs.admin), "portico_backend_up", "backend", o.spare.addr) == 0
	})
	// Probes come every 100ms from a random start: on a fast run all of
	// the above takes less, so wait for the one a passing probe must show.
	passes := max(sample(before, "portico_health_probes_total", "backend", o.web.addr, "result", "pass"), 0)
	waitUntil(t, "a passing probe of the healthy backend", func() bool {
		return sample(scrape(t, o.addrs.admin), "portico_health_probes_total", "backend", o.web.addr, "result", "pass") > passes
	})
	after := scrape(t, o.addrs.admin)
	_, body := get(t, "http://"+o.addrs.admin+"/metrics")
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "portico_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	close(o.release)
	<-slow

	for _, c := range []struct {
		what   string
		family string
		labels []string
		delta  float64 // at least
	}{
		{"a request", "portico_requests_total", []string{"route", "web", "method", "GET", "status_class", "2xx"}, 1},
		{"a 5xx", "portico_requests_total", []string{"route", "web", "status_class", "5xx"}, 1},
		{"an unrouted request", "portico_requests_total", []string{"route", "(none)", "status_class", "4xx"}, 1},
		{"request durations", "portico_request_duration_seconds", []string{"route", "web"}, 2},
		{"response bytes", "portico_response_bytes_total", []string{"route", "web"}, 10},
		{"a backend 5xx", "portico_backend_requests_total", []string{"pool", "web", "status_class", "5xx"}, 1},
		{"a refused attempt", "portico_backend_requests_total", []string{"backend", o.dead.addr, "status_class", "error"}, 1},
		{"time to first byte", "portico_backend_ttfb_seconds", []string{"pool", "web"}, 2},
		{"a retry", "portico_retries_total", []string{"pool", "flaky"}, 1},
		{"an ejection", "portico_backend_ejections_total", []string{"backend", o.dead.addr, "reason", "error"}, 1},
		{"passing probes", "portico_health_probes_total", []string{"backend", o.web.addr, "result", "pass"}, 1},
		{"a failing probe", "portico_health_probes_total", []string{"backend", o.spare.addr, "result", "fail"}, 1},
		{"a backend killed", "portico_backend_up", []string{"backend", o.spare.addr}, -1},
		{"a backend killed", "portico_pool_backends_usable", []string{"pool", "web"}, -1},
		{"a request in flight", "portico_backend_in_flight_requests", []string{"pool", "web"}, 1},
		{"an h1 connection", "portico_connections_total", []string{"listener", "http", "protocol", "h1"}, 1},
		{"an h2 connection", "portico_connections_total", []string{"listener", "https", "protocol", "h2"}, 1},
		{"a TLS handshake", "portico_tls_handshakes_total", []string{"result", "ok"}, 1},
	} {
		b, a := max(sample(before, c.family, c.labels...), 0), sample(after, c.family, c.labels...)
		if c.delta > 0 && a-b < c.delta || c.delta < 0 && a-b > c.delta {
			t.Errorf("%s: %s%v went from %v to %v, want a change of %v", c.what, c.family, c.labels, b, a, c.delta)
		}
	}
	if exp := sample(after, "portico_certificate_expiry_timestamp_seconds", "name", "web.test", "source", "static"); exp < float64(time.Now().Add(89*24*time.Hour).Unix()) {
		t.Errorf("certificate expiry = %v, want about 90 days from now", exp)
	}
	for _, f := range []string{"portico_build_info", "portico_config_last_reload_successful", "portico_config_reloads_total",
		"portico_config_last_reload_success_timestamp_seconds", "portico_access_log_dropped_total", "portico_pool_backends",
		"portico_connections_open", "go_goroutines", "process_cpu_seconds_total"} {
		if after[f] == nil {
			t.Errorf("%s missing from /metrics", f)
		}
	}
}

// familiesAppearingLater are referenced by the dashboards but exported only
// once what they count is configured: rejections need a middleware that
// can refuse (the middleware chain resolves their series when it is built);
// portico_redis_up only with a [cluster].
var familiesAppearingLater = map[string]bool{"portico_rejections_total": true, "portico_redis_up": true}

// Every metric the Grafana dashboard and the alert rules use exists in
// /metrics, with the suffixes its type has.
func TestDashboardsUseExistingMetrics(t *testing.T) {
	o := startObserved(t)
	o.send(t, "web.test", "/")
	o.send(t, "flaky.test", "/")
	res, err := o.https.Get("https://" + o.addrs.https + "/")
	if err == nil {
		res.Body.Close()
	}
	mfs := scrape(t, o.addrs.admin)
	names := map[string]bool{}
	for name, mf := range mfs {
		names[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	used := regexp.MustCompile(`\b(?:portico|go|process)_[a-z0-9_]+`)
	for _, file := range []string{"../../dashboards/grafana.json", "../../dashboards/alerts.yml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, name := range used.FindAllString(string(data), -1) {
			seen[name] = true
		}
		if len(seen) < 5 {
			t.Errorf("%s uses %d metrics, want the dashboards' many", file, len(seen))
		}
		var missing []string
		for name := range seen {
			if !names[name] && !familiesAppearingLater[name] {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s uses metrics /metrics does not have: %v", file, missing)
		}
	}
}

// /readyz answers 200 once serve is up and 503 from the moment shutdown
// starts, while requests still drain; /healthz stays 200 meanwhile.
func TestReadyzDuringShutdown(t *testing.T) {
	release := make(chan struct{})
	be := startUpstream(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "done")
	})
	cfg, err := config.Parse([]byte(`
[server]
http_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
shutdown_timeout = "10s"
[pools.app]
backends = `+backendList(be)+`
[[routes]]
pool = "app"
`), "ready.toml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan listenAddrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, discardLogger(), func(a listenAddrs) { started <- a }) }()
	addrs := <-started
	status := func(path string) int {
		res, err := http.Get("http://" + addrs.admin + path)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := status("/readyz"); got != 200 {
		t.Fatalf("/readyz once serving = %d, want 200", got)
	}
	answered := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + addrs.http + "/")
		if err != nil {
			answered <- err.Error()
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		answered <- string(body)
	}()
	waitUntil(t, "the request in flight", func() bool { return pools(t, addrs.admin)[0].Backends[0].InFlight == 1 })
	cancel()
	waitUntil(t, "/readyz 503 while draining", func() bool { return status("/readyz") == 503 })
	if got := status("/healthz"); got != 200 {
		t.Errorf("/healthz while draining = %d, want 200", got)
	}
	close(release)
	if got := <-answered; got != "done" {
		t.Errorf("the draining request got %q, want its answer", got)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}
