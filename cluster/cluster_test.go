package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testlog"
	"github.com/portico/portico/internal/testredis"
	"github.com/portico/portico/middleware"
)

// counts are the hooks' counters, by label.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

type labelCounter struct {
	c     *counts
	label string
}

func (l labelCounter) Inc() {
	l.c.mu.Lock()
	l.c.n[l.label]++
	l.c.mu.Unlock()
}

func (c *counts) get(label string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[label]
}

type fixture struct {
	redis *testredis.Server
	c     *Client
	logs  *testlog.Buffer
	errs  *counts // by operation
	falls *counts // by middleware
	rdb   *redis.Client
}

// newFixture connects a Client to a fresh redis-server; extra is added to
// the [cluster] table.
func newFixture(t *testing.T, extra ...string) *fixture {
	t.Helper()
	rs := testredis.Start(t)
	f := &fixture{redis: rs, logs: &testlog.Buffer{}, errs: &counts{n: map[string]int{}}, falls: &counts{n: map[string]int{}}}
	cfg := parseCluster(t, append([]string{fmt.Sprintf("redis_url = %q", rs.URL())}, extra...)...)
	c, err := New(&cfg.Cluster, slog.New(slog.NewTextHandler(f.logs, nil)), Hooks{
		Errors:    func(op string) Counter { return labelCounter{f.errs, op} },
		Fallbacks: func(mw string) Counter { return labelCounter{f.falls, mw} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f.c = c
	f.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = f.rdb.Close() })
	return f
}

func parseCluster(t *testing.T, lines ...string) *config.Config {
	t.Helper()
	doc := "[cluster]\n" + strings.Join(lines, "\n") + "\n[pools.p]\nbackends = [{ url = \"http://127.0.0.1:1\" }]\n[[routes]]\npool = \"p\"\n"
	cfg, err := config.Parse([]byte(doc), "cluster.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// limitOpts is a rate_limit of rate per second and burst, global.
func limitOpts(rate float64, burst int, onError string) *config.RateLimit {
	return &config.RateLimit{Rate: config.Rate{PerSecond: rate}, Burst: burst, Scope: config.ScopeGlobal, OnRedisError: onError}
}

// localCalls counts the decisions the local fallback made.
type localCalls struct{ n atomic.Int64 }

func (l *localCalls) Allow(middleware.Key, time.Time) middleware.Decision {
	l.n.Add(1)
	return middleware.Decision{Allowed: true, Remaining: 42}
}

var client1 = middleware.Key{IP: netip.MustParseAddr("203.0.113.7")}

func TestGlobalGCRAIsShared(t *testing.T) {
	f := newFixture(t)
	// Two deciders on one name, as two instances would have: one bucket.
	a := f.c.RateLimiter("api", limitOpts(1, 3, config.OnErrorLocal), &localCalls{})
	b := f.c.RateLimiter("api", limitOpts(1, 3, config.OnErrorLocal), &localCalls{})
	var got []middleware.Decision
	for i, d := range []middleware.Decider{a, b, a, b} {
		got = append(got, d.Allow(client1, time.Now()))
		if i < 3 && !got[i].Allowed {
			t.Fatalf("request %d refused: %+v", i, got[i])
		}
	}
	if got[0].Remaining != 2 || got[1].Remaining != 1 || got[2].Remaining != 0 {
		t.Errorf("remaining %d, %d, %d; want 2, 1, 0", got[0].Remaining, got[1].Remaining, got[2].Remaining)
	}
	last := got[3]
	if last.Allowed || last.RetryAfter <= 900*time.Millisecond || last.RetryAfter > time.Second {
		t.Errorf("4th request of a burst of 3 at 1/s: %+v, want refused, retry after about 1s", last)
	}
	if last.Reset <= 2*time.Second || last.Reset > 3*time.Second {
		t.Errorf("reset %v, want just under 3s (three intervals to a full bucket)", last.Reset)
	}
	// Another name, another bucket.
	if d := f.c.RateLimiter("other", limitOpts(1, 3, config.OnErrorLocal), nil).Allow(client1, time.Now()); !d.Allowed {
		t.Errorf("another middleware's bucket is shared: %+v", d)
	}

	keys, err := f.rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"portico:rl:api:203.0.113.7": true, "portico:rl:other:203.0.113.7": true}
	if len(keys) != 2 || !want[keys[0]] || !want[keys[1]] {
		t.Errorf("redis keys %q, want %v", keys, want)
	}
	// The key expires once the bucket would be full again: idle keys cost nothing.
	if ttl := f.rdb.PTTL(context.Background(), "portico:rl:api:203.0.113.7").Val(); ttl <= 0 || ttl > 3*time.Second {
		t.Errorf("bucket TTL %v, want (0, 3s]", ttl)
	}
	if f.errs.get(OpRateLimit) != 0 || f.falls.get("api") != 0 {
		t.Errorf("errors %d, fallbacks %d with redis up", f.errs.get(OpRateLimit), f.falls.get("api"))
	}
}

// A key that is not a client address, such as an API key in a header, is
// never written into Redis as is.
func TestGlobalKeysHashSecretsAndUsePrefix(t *testing.T) {
	f := newFixture(t, `key_prefix = "edge/"`)
	d := f.c.RateLimiter("keys", limitOpts(10, 10, config.OnErrorLocal), nil)
	secret := "sk_live_51HxYzSecretValue"
	if !d.Allow(middleware.Key{S: secret}, time.Now()).Allowed {
		t.Fatal("refused")
	}
	keys := f.rdb.Keys(context.Background(), "*").Val()
	if len(keys) != 1 || !strings.HasPrefix(keys[0], "edge/rl:keys:s:") || strings.Contains(keys[0], secret) {
		t.Errorf("keys %q: want one under edge/rl:keys:s: without the secret", keys)
	}
}

// Over a paced run, Redis allows burst + rate × time, no more, no less.
func TestGlobalAgreesWithLocalOverTime(t *testing.T) {
	if testing.Short() {
		t.Skip("paced for 1.5 s")
	}
	// A generous timeout: this is about the algorithm, and a loaded
	// machine can hold a loopback call past 50ms now and then.
	f := newFixture(t, `timeout = "2s"`)
	// A burst of a whole second: a loaded machine that stalls this loop for
	// less than that loses no allowance.
	d := f.c.RateLimiter("paced", limitOpts(20, 20, config.OnErrorLocal), &localCalls{})
	t.Cleanup(func() {
		if n := f.errs.get(OpRateLimit); n != 0 {
			t.Errorf("%d redis failures:\n%s", n, f.logs.String())
		}
	})
	start := time.Now()
	allowed := 0
	for time.Since(start) < 1500*time.Millisecond {
		if d.Allow(client1, time.Now()).Allowed {
			allowed++
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start).Seconds()
	// burst + rate × elapsed, give or take the request in flight at each end.
	want := 20 + 20*elapsed
	if float64(allowed) < want-2 || float64(allowed) > want+1 {
		t.Errorf("%d allowed in %.2fs at 20/s burst 20, want %.1f", allowed, elapsed, want)
	}
}

func TestFallbackWhenRedisIsSlowOrDown(t *testing.T) {
	f := newFixture(t, `timeout = "50ms"`)
	local := &localCalls{}
	dl := f.c.RateLimiter("lim", limitOpts(1, 1, config.OnErrorLocal), local)
	da := f.c.RateLimiter("open", limitOpts(1, 1, config.OnErrorAllow), nil)
	dd := f.c.RateLimiter("shut", limitOpts(1, 1, config.OnErrorDeny), nil)
	if !dl.Allow(client1, time.Now()).Allowed || !da.Allow(client1, time.Now()).Allowed || !dd.Allow(client1, time.Now()).Allowed {
		t.Fatal("first requests refused with redis up")
	}

	f.redis.Pause() // connected, silent: every call times out
	t.Cleanup(f.redis.Resume)
	// Each decision is made within the timeout, by the policy of its limit.
	for _, tc := range []struct {
		d       middleware.Decider
		allowed bool
	}{{dl, true}, {da, true}, {dd, false}} {
		start := time.Now()
		got := tc.d.Allow(client1, time.Now())
		if took := time.Since(start); took > time.Second {
			t.Errorf("a decision with redis frozen took %v, want about the 50ms timeout", took)
		}
		if got.Allowed != tc.allowed {
			t.Errorf("decision %+v, want allowed=%v", got, tc.allowed)
		}
	}
	if local.n.Load() != 1 {
		t.Errorf("local fallback decided %d times, want 1", local.n.Load())
	}
	// Two more failures open the breaker (5 in a row): from then on
	// decisions do not wait at all and Redis is not called.
	dl.Allow(client1, time.Now())
	dl.Allow(client1, time.Now())
	if f.c.Available() {
		t.Fatal("breaker still closed after 5 failures in a row")
	}
	errsBefore := f.errs.get(OpRateLimit)
	// None waits out the timeout, as a call to the frozen Redis would
	// (measured one by one: a sum over 100 decisions is a benchmark on a
	// busy machine); the error count below shows that none called it.
	var slowest time.Duration
	for range 100 {
		start := time.Now()
		dl.Allow(client1, time.Now())
		slowest = max(slowest, time.Since(start))
	}
	if slowest >= 50*time.Millisecond {
		t.Errorf("a decision with the breaker open took %v, as long as the timeout", slowest)
	}
	if n := f.errs.get(OpRateLimit); n != errsBefore || n != 5 {
		t.Errorf("%d failed redis calls counted (%d before the breaker), want 5: the breaker stops the calls", n, errsBefore)
	}
	if n := f.falls.get("lim"); n != 103 {
		t.Errorf("%d fallbacks counted for lim, want 103", n)
	}
	if n := strings.Count(f.logs.String(), "redis call failed"); n != 1 {
		t.Errorf("%d failure lines logged, want 1 (at most one every 10s):\n%s", n, f.logs.String())
	}
	if !strings.Contains(f.logs.String(), "redis unavailable") {
		t.Errorf("the breaker opening is not logged:\n%s", f.logs.String())
	}

	// Redis back: after the breaker's pause one call tries again, and
	// decisions are global from then on, with nothing to do.
	f.redis.Resume()
	deadline := time.Now().Add(breakFor + 10*time.Second)
	for !f.c.Available() && time.Now().Before(deadline) {
		dl.Allow(client1, time.Now())
		time.Sleep(20 * time.Millisecond)
	}
	if !f.c.Available() {
		t.Fatal("decisions did not go back to redis")
	}
	before := local.n.Load()
	if got := dl.Allow(client1, time.Now()); got.Allowed {
		t.Errorf("global bucket (1/s, burst 1, drained) allowed a request: %+v", got)
	}
	if local.n.Load() != before {
		t.Error("a decision went to the local fallback with redis back")
	}
	if !strings.Contains(f.logs.String(), "redis answers again") {
		t.Errorf("recovery not logged:\n%s", f.logs.String())
	}
}

func TestNewNeedsThePasswordVariable(t *testing.T) {
	t.Setenv("PORTICO_TEST_REDIS_PW", "")
	cfg := parseCluster(t, `redis_url = "redis://127.0.0.1:1"`, `redis_password_env = "PORTICO_TEST_REDIS_PW"`)
	if _, err := New(&cfg.Cluster, slog.New(slog.DiscardHandler), Hooks{}); err == nil || !strings.Contains(err.Error(), "PORTICO_TEST_REDIS_PW is not set") {
		t.Errorf("New = %v, want an error naming the variable", err)
	}
}

// The password comes from the environment and works against a Redis that
// requires it.
func TestPasswordFromEnvironment(t *testing.T) {
	f := newFixture(t)
	if err := f.rdb.ConfigSet(context.Background(), "requirepass", "s3cret-pw").Err(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PORTICO_TEST_REDIS_PW", "s3cret-pw")
	cfg := parseCluster(t, fmt.Sprintf("redis_url = %q", f.redis.URL()), `redis_password_env = "PORTICO_TEST_REDIS_PW"`)
	c, err := New(&cfg.Cluster, slog.New(slog.DiscardHandler), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("ping with the password from the environment: %v", err)
	}
}
