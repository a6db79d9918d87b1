package main

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testredis"
)

// clusterInstances starts n Portico instances sharing the Redis at url,
// each with a plain and an admin listener on loopback, in front of one
// backend. routes is TOML added to each configuration.
func clusterInstances(t *testing.T, n int, redisURL, extra string) []listenAddrs {
	t.Helper()
	be := hostBackend(t)
	var addrs []listenAddrs
	for i := range n {
		src := fmt.Sprintf(`
[server]
http_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
shutdown_timeout = "5s"
[cluster]
redis_url = %q
%s
[pools.app]
backends = [{ url = %q }]
`, redisURL, extra, be)
		cfg, err := config.Parse([]byte(src), fmt.Sprintf("instance%d.toml", i))
		if err != nil {
			t.Fatalf("config: %v\n%s", err, src)
		}
		cfg.Log.AccessLog = config.Off
		a, _ := startServe(t, cfg)
		addrs = append(addrs, a)
	}
	return addrs
}

// statusOf sends GET path to addr and returns the status, or 0 and the
// error.
func statusOf(c *http.Client, addr, path string) (int, error) {
	res, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// Three instances share one global limit of 50/s, burst 10. Clients hit
// all three for 10 s: together they are allowed 510 requests, within 5%.
// Then Redis is killed: requests are still answered at once, under the
// local fallback, and the failure is counted; Redis restarted, decisions
// are global again by themselves.
func TestClusterGlobalRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 10 s and more")
	}
	rs := testredis.Start(t)
	// A timeout a loaded machine meets: this is about the algorithm;
	// TestFallbackWhenRedisIsSlowOrDown (package cluster) covers 50ms.
	inst := clusterInstances(t, 3, rs.URL(), `timeout = "500ms"
[middlewares.shared]
type = "rate_limit"
rate = 50
burst = 10
scope = "global"
[middlewares.small]
type = "rate_limit"
rate = "1/m"
burst = 3
scope = "global"
[[routes]]
path_prefix = "/"
pool = "app"
middlewares = ["shared"]
[[routes]]
path_prefix = "/small"
pool = "app"
middlewares = ["small"]`)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()

	t.Run("within 5% of rate × 10 s + burst across three instances", func(t *testing.T) {
		var allowed, refused, failed atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(10 * time.Second)
		// Two clients per instance, about 60 requests a second each: 360/s
		// offered against 50/s allowed.
		for i := range 6 {
			wg.Go(func() {
				for time.Now().Before(end) {
					switch code, _ := statusOf(client, inst[i%3].http, "/"); code {
					case http.StatusOK:
						allowed.Add(1)
					case http.StatusTooManyRequests:
						refused.Add(1)
					default:
						failed.Add(1)
					}
					time.Sleep(15 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		got := allowed.Load()
		t.Logf("allowed %d, refused %d, failed %d; want 510 ± 5%%", got, refused.Load(), failed.Load())
		if got < 485 || got > 535 || failed.Load() != 0 {
			t.Errorf("allowed %d (refused %d, failed %d), want 485..535 and no failure", got, refused.Load(), failed.Load())
		}
		for i, a := range inst {
			if n := sample(scrape(t, a.admin), "portico_rate_limit_fallbacks_total", "middleware", "shared"); n > 0 {
				t.Errorf("instance %d decided %v requests without redis while it was up", i, n)
			}
		}
	})

	t.Run("redis killed: answered at once under the local fallback, counted", func(t *testing.T) {
		rs.Stop()
		// Requests at once, each waiting out the timeout at most, until the
		// breakers open: none hangs.
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Go(func() { _, _ = statusOf(client, inst[i%3].http, "/") })
		}
		wg.Wait()
		allowed := 0
		for i, a := range inst {
			for range 4 {
				start := time.Now()
				code, err := statusOf(client, a.http, "/small")
				if took := time.Since(start); err != nil || took > 2*time.Second {
					t.Fatalf("instance %d with redis down: %v after %v", i, err, took)
				}
				if code == http.StatusOK {
					allowed++
				}
			}
		}
		// Each instance's own bucket: burst 3 each, where Redis would
		// have allowed 3 in all.
		if allowed != 9 {
			t.Errorf("%d of 12 allowed under the local fallback, want 3 per instance", allowed)
		}
		for i, a := range inst {
			m := scrape(t, a.admin)
			if n := sample(m, "portico_redis_errors_total", "operation", "rate_limit"); n < 5 {
				t.Errorf("instance %d: %v redis errors counted, want at least 5", i, n)
			}
			if n := sample(m, "portico_rate_limit_fallbacks_total", "middleware", "small"); n != 4 {
				t.Errorf("instance %d: %v fallbacks counted for small, want 4", i, n)
			}
			if up := sample(m, "portico_redis_up"); up != 0 {
				t.Errorf("instance %d: portico_redis_up = %v with redis down, want 0", i, up)
			}
		}
	})

	t.Run("redis restarted: decisions global again by themselves", func(t *testing.T) {
		rs.Restart()
		for i, a := range inst {
			waitUntilFor(t, 20*time.Second, fmt.Sprintf("instance %d back on redis", i), func() bool {
				_, _ = statusOf(client, a.http, "/") // the breaker's probe rides on a request
				return sample(scrape(t, a.admin), "portico_redis_up") == 1
			})
		}
		allowed := 0
		for _, a := range inst {
			for range 3 {
				if code, _ := statusOf(client, a.http, "/small"); code == http.StatusOK {
					allowed++
				}
			}
		}
		if allowed != 3 {
			t.Errorf("%d of 9 allowed with redis back, want 3: one shared bucket of burst 3", allowed)
		}
	})
}

// waitUntilFor is waitUntil with a limit of its own.
func waitUntilFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}
