package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/leakcheck"
	"github.com/portico/portico/internal/testserve"
)

// upstream is a real loopback backend that names itself in X-Backend and
// counts the requests (not probes) it receives and those cut off before
// the answer.
type upstream struct {
	name      string
	addr      string
	srv       *http.Server
	hits, cut atomic.Int64
	conns     testserve.Conns
}

func startUpstream(t *testing.T, name string, h http.HandlerFunc) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{name: name, addr: ln.Addr().String()}
	u.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" { // probes are not traffic
			u.hits.Add(1)
		}
		w.Header().Set("X-Backend", name)
		h(w, r)
		if r.Context().Err() != nil {
			u.cut.Add(1)
		}
	})}
	u.conns.Track(u.srv)
	go func() { _ = u.srv.Serve(ln) }()
	t.Cleanup(u.kill)
	return u
}

// kill is the SIGKILL equivalent: the listener and every connection close
// at once, whatever they were doing.
func (u *upstream) kill() { _ = u.srv.Close() }

// answer returns a handler that waits d, then answers 200 "ok".
func answer(d time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
	}
}

// backendList renders upstreams as a TOML backends array.
func backendList(us ...*upstream) string {
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf(`{ url = "http://%s" }`, u.addr))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// startPortico runs serve with the pool table given (without its header)
// and one route to it, until the test ends.
func startPortico(t *testing.T, pool string) listenAddrs {
	t.Helper()
	cfg, err := config.Parse([]byte(`
[server]
http_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
shutdown_timeout = "5s"
[pools.app]
`+pool+`
[[routes]]
pool = "app"
`), "resilience.toml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.Log.AccessLog = config.Off // the tests read no access log
	return runServe(t, cfg)
}

// runServe runs serve with cfg until the test ends and returns the
// addresses it listens on.
func runServe(t *testing.T, cfg *config.Config) listenAddrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan listenAddrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, discardLogger(), func(a listenAddrs) { ready <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-ready:
		return a
	case err := <-done:
		t.Fatalf("serve returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve never became ready")
	}
	return listenAddrs{}
}

// loadReport is what a load run saw.
type loadReport struct {
	ok, failed int
	failures   []string
	byBackend  map[string]int
	latencies  []time.Duration
}

func (r *loadReport) share(backend string) float64 {
	return float64(r.byBackend[backend]) / float64(r.ok)
}

// quantile returns the latency below which the share q of requests fell.
func (r *loadReport) quantile(q float64) time.Duration {
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[int(float64(len(s))*q)]
}

// load sends GETs from workers, each paced to one request per pace (or
// fewer, if answers take longer: a worker that falls behind does not
// catch up in a burst), for d.
func load(t *testing.T, addr string, workers int, pace, d time.Duration) *loadReport {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	r := &loadReport{byBackend: map[string]int{}}
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next := time.Now(); next.Before(end); next = later(next.Add(pace), time.Now()) {
				time.Sleep(time.Until(next))
				start := time.Now()
				res, err := client.Get("http://" + addr + "/")
				var body []byte
				if err == nil {
					body, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				took := time.Since(start)
				mu.Lock()
				switch {
				case err != nil:
					r.failed++
					r.failures = append(r.failures, err.Error())
				case res.StatusCode != http.StatusOK || string(body) != "ok":
					r.failed++
					r.failures = append(r.failures, fmt.Sprintf("status %d body %q", res.StatusCode, body))
				default:
					r.ok++
					r.byBackend[res.Header.Get("X-Backend")]++
					r.latencies = append(r.latencies, took)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return r
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pools reads the admin API's view of the pools.
func pools(t *testing.T, adminAddr string) []admin.PoolView {
	t.Helper()
	_, body := get(t, "http://"+adminAddr+"/api/pools")
	var views []admin.PoolView
	if err := json.Unmarshal([]byte(body), &views); err != nil {
		t.Fatalf("/api/pools: %v\n%s", err, body)
	}
	return views
}

// Killing one of three backends under steady load costs no idempotent GET:
// requests caught on it are retried elsewhere, and passive and active
// checks take it out of rotation within milliseconds.
func TestBackendKilledUnderLoadLosesNoGET(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s load test")
	}
	for _, policy := range []string{"round_robin", "least_conn"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			var us []*upstream
			for i := range 3 {
				// 15 ms answers: a few requests are in flight on each
				// backend when one is killed. Probes get a generous
				// timeout: the kill is seen at once (connection refused),
				// and a busy CI machine must not fail the live backends.
				us = append(us, startUpstream(t, fmt.Sprintf("b%d", i), answer(15*time.Millisecond)))
			}
			addrs := startPortico(t, fmt.Sprintf(`balance = %q
backends = %s
health = { interval = "500ms", timeout = "500ms" }
passive = { fail_timeout = "1s" }`, policy, backendList(us...)))

			killAt := 3 * time.Second
			killed := time.AfterFunc(killAt, us[0].kill)
			defer killed.Stop()
			// 6 workers at one request per 20 ms: about 300 GETs a second.
			r := load(t, addrs.http, 6, 20*time.Millisecond, 10*time.Second)

			hitsAfterKill := us[0].hits.Load()
			views := pools(t, addrs.admin)
			dead := views[0].Backends[0]
			t.Logf("%s: %d GETs in 10 s (%.0f/s), %d failed; answered by %v; killed backend: %d requests received, %d cut off in flight by the kill, %d ejections, healthy=%v, last check %q",
				policy, r.ok+r.failed, float64(r.ok+r.failed)/10, r.failed, r.byBackend, hitsAfterKill, us[0].cut.Load(), dead.Ejections, dead.Healthy, dead.LastCheck.Detail)
			if r.failed != 0 {
				t.Errorf("%d of %d GETs failed, want 0; first: %v", r.failed, r.ok+r.failed, r.failures[:min(5, len(r.failures))])
			}
			if r.ok < 2000 {
				t.Errorf("only %d GETs succeeded, want a few hundred a second", r.ok)
			}
			if dead.Usable || dead.Healthy {
				t.Errorf("killed backend still usable/healthy in the admin view: %+v", dead)
			}
		})
	}
}

// With one backend 50 ms slower than the other two, ewma sends it under
// 10% of requests where round robin sends it a third, so the p90 falls from
// the slow backend's answer time to the fast ones'. The p99 is logged: it
// falls too once ewma has learnt (README quotes it), but how fast it learns
// depends on how busy the machine is, so it is not asserted.
func TestEWMAShiftsLoadFromSlowBackend(t *testing.T) {
	fast1 := startUpstream(t, "fast1", answer(2*time.Millisecond))
	fast2 := startUpstream(t, "fast2", answer(2*time.Millisecond))
	slow := startUpstream(t, "slow", answer(52*time.Millisecond))
	shares := map[string]float64{}
	p90s := map[string]time.Duration{}
	for _, policy := range []string{"round_robin", "ewma"} {
		addrs := startPortico(t, fmt.Sprintf("balance = %q\nbackends = %s\n", policy, backendList(fast1, fast2, slow)))
		r := load(t, addrs.http, 8, 10*time.Millisecond, 2*time.Second)
		if r.failed != 0 {
			t.Fatalf("%s: %d requests failed: %v", policy, r.failed, r.failures[:min(5, len(r.failures))])
		}
		shares[policy], p90s[policy] = r.share("slow"), r.quantile(0.90)
		t.Logf("%s: %d requests, slow backend share %.1f%%, p90 %v, p99 %v", policy, r.ok, 100*shares[policy],
			p90s[policy].Round(100*time.Microsecond), r.quantile(0.99).Round(100*time.Microsecond))
	}
	if s := shares["round_robin"]; s < 0.30 || s > 0.37 {
		t.Errorf("round_robin sent the slow backend %.1f%%, want a third", 100*s)
	}
	if s := shares["ewma"]; s >= 0.10 {
		t.Errorf("ewma sent the slow backend %.1f%%, want under 10%%", 100*s)
	}
	if p90s["ewma"] >= p90s["round_robin"]/2 {
		t.Errorf("ewma p90 %v not under half of round_robin's %v", p90s["ewma"], p90s["round_robin"])
	}
}

// getStatus sends one GET and returns the response with its body read.
func getStatus(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

// A pool whose only backend fails its checks answers 503 with Retry-After,
// unless panic_mode sends the traffic to it anyway.
func TestNoUsableBackendIs503WithRetryAfterUnlessPanicMode(t *testing.T) {
	be := startUpstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	for _, tc := range []struct {
		panicMode  bool
		status     int
		retryAfter string
		body       string
	}{
		{false, http.StatusServiceUnavailable, "3", "service unavailable\n"},
		{true, http.StatusOK, "", "ok"},
	} {
		t.Run(fmt.Sprintf("panic_mode=%v", tc.panicMode), func(t *testing.T) {
			addrs := startPortico(t, fmt.Sprintf("backends = %s\npanic_mode = %v\nhealth = { interval = \"100ms\", rise = 30 }\n", backendList(be), tc.panicMode))
			waitUntil(t, "backend marked down", func() bool { return !pools(t, addrs.admin)[0].Backends[0].Healthy })
			res, body := getStatus(t, "http://"+addrs.http+"/")
			if res.StatusCode != tc.status || res.Header.Get("Retry-After") != tc.retryAfter || body != tc.body {
				t.Errorf("got %d, Retry-After %q, body %q; want %d, %q, %q",
					res.StatusCode, res.Header.Get("Retry-After"), body, tc.status, tc.retryAfter, tc.body)
			}
		})
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
	}
}

// With max_conns = 1, a second concurrent request waits queue_timeout for
// the first to finish, then gets 503.
func TestMaxConnsQueueTimeout(t *testing.T) {
	be := startUpstream(t, "b", answer(300*time.Millisecond))
	for _, tc := range []struct {
		queue  string
		status int
	}{
		{"100ms", http.StatusServiceUnavailable},
		{"2s", http.StatusOK},
	} {
		t.Run("queue_timeout="+tc.queue, func(t *testing.T) {
			addrs := startPortico(t, fmt.Sprintf("backends = %s\nmax_conns = 1\nqueue_timeout = %q\n", backendList(be), tc.queue))
			first := make(chan int, 1)
			go func() {
				res, _ := getStatus(t, "http://"+addrs.http+"/")
				first <- res.StatusCode
			}()
			waitUntil(t, "first request in flight", func() bool { return pools(t, addrs.admin)[0].Backends[0].InFlight == 1 })
			start := time.Now()
			res, _ := getStatus(t, "http://"+addrs.http+"/")
			took := time.Since(start)
			if res.StatusCode != tc.status {
				t.Errorf("second request: %d, want %d", res.StatusCode, tc.status)
			}
			if tc.status == http.StatusServiceUnavailable && (took < 100*time.Millisecond || res.Header.Get("Retry-After") != "1") {
				t.Errorf("503 after %v with Retry-After %q, want after queue_timeout with 1", took, res.Header.Get("Retry-After"))
			}
			if got := <-first; got != http.StatusOK {
				t.Errorf("first request: %d, want 200", got)
			}
		})
	}
}

// When every backend fails, the retry budget keeps retries to its share of
// requests instead of multiplying them by 1 + retries.
func TestRetryBudgetStopsRetryStorm(t *testing.T) {
	hangUp := func(w http.ResponseWriter, _ *http.Request) {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = c.Close()
		}
	}
	const requests = 200
	for _, tc := range []struct {
		percent  int
		maxExtra int // retries allowed: percent of requests plus the burst of 10
	}{
		{20, requests*20/100 + 10},
		{100, requests + 10},
	} {
		t.Run(fmt.Sprintf("retry_budget_percent=%d", tc.percent), func(t *testing.T) {
			var us []*upstream
			for i := range 3 {
				us = append(us, startUpstream(t, fmt.Sprintf("b%d", i), hangUp))
			}
			addrs := startPortico(t, fmt.Sprintf("backends = %s\nretries = 2\nretry_budget_percent = %d\npassive = { max_fails = 0 }\n", backendList(us...), tc.percent))
			failed := 0
			for range requests {
				if res, _ := getStatus(t, "http://"+addrs.http+"/"); res.StatusCode == http.StatusBadGateway {
					failed++
				}
			}
			var attempts int64
			for _, u := range us {
				attempts += u.hits.Load()
			}
			extra := int(attempts) - requests
			t.Logf("budget %d%%: %d requests, %d failed, %d backend attempts (%d retries; without a budget up to %d)",
				tc.percent, requests, failed, attempts, extra, 2*requests)
			if failed != requests {
				t.Errorf("%d of %d requests failed, want all (every backend hangs up)", failed, requests)
			}
			if extra > tc.maxExtra || extra < tc.maxExtra/2 {
				t.Errorf("%d retries, want at most %d and more than none", extra, tc.maxExtra)
			}
		})
	}
}

// Building and tearing down the whole runtime (snapshot, transports, health
// checkers, listeners) over and over leaves no goroutine behind.
func TestServeLeavesNoGoroutines(t *testing.T) {
	be := startUpstream(t, "b", answer(0))
	time.Sleep(10 * time.Millisecond)
	base := runtime.NumGoroutine()
	for range 10 {
		func() {
			cfg, err := config.Parse([]byte(fmt.Sprintf(`
[server]
http_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
[pools.app]
backends = %s
health = { interval = "20ms", timeout = "20ms" }
[[routes]]
pool = "app"
`, backendList(be))), "leak.toml")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Log.AccessLog = config.Off // the tests read no access log
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan listenAddrs, 1)
			done := make(chan error, 1)
			go func() { done <- serve(ctx, cfg, discardLogger(), func(a listenAddrs) { ready <- a }) }()
			a := <-ready
			for range 5 {
				getStatus(t, "http://"+a.http+"/")
			}
			time.Sleep(50 * time.Millisecond) // some probes
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}()
	}
	http.DefaultClient.CloseIdleConnections()
	leakcheck.Settle(t, base, "10 serve cycles")
}
