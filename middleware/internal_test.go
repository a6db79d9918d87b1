package middleware

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// clock is a settable time for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// buildOne builds the middleware "m" of a TOML document fragment.
func buildOne(t *testing.T, doc string, env Env) (*Set, Middleware) {
	t.Helper()
	cfg, err := config.Parse([]byte(doc+"\n[pools.p]\nbackends = [{ url = \"http://127.0.0.1:1\" }]\n[[routes]]\npool = \"p\"\n"), "test.toml")
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	set, err := Build(cfg.Middlewares, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	return set, set.byName["m"].mw
}

// serve runs one request through h with a request record, as the proxy
// would, and returns the recorder.
func serve(h http.Handler, r *http.Request, client string) (*httptest.ResponseRecorder, *reqinfo.Info) {
	ctx, info := reqinfo.NewContext(r.Context())
	info.Start = time.Now()
	info.Route = "r"
	if client != "" {
		info.ClientIP = netip.MustParseAddr(client)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r.WithContext(ctx))
	return rec, info
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })

func TestRateLimitHeadersExactWithClock(t *testing.T) {
	c := newClock()
	_, m := buildOne(t, `
[middlewares.m]
type = "rate_limit"
rate = "10/s"
burst = 3
`, Env{Now: c.Now})
	h := m.Wrap(ok, "r")
	type step struct {
		advance    time.Duration
		status     int
		state      string
		retryAfter string
	}
	for i, s := range []step{
		{0, 200, `"m";r=2;t=1`, ""},
		{0, 200, `"m";r=1;t=1`, ""},
		{0, 200, `"m";r=0;t=1`, ""},
		{0, 429, `"m";r=0;t=1`, "1"},                     // 300ms until full, 100ms until the next
		{99 * time.Millisecond, 429, `"m";r=0;t=1`, "1"}, // 1ms short
		{time.Millisecond, 200, `"m";r=0;t=1`, ""},       // one emission interval later
		{time.Second, 200, `"m";r=2;t=1`, ""},            // full again after idling
		{0, 200, `"m";r=1;t=1`, ""},
	} {
		c.Advance(s.advance)
		rec, _ := serve(h, httptest.NewRequest("GET", "/", nil), "192.0.2.1")
		if rec.Code != s.status || rec.Header().Get("Ratelimit") != s.state || rec.Header().Get("Retry-After") != s.retryAfter {
			t.Fatalf("step %d: %d %q retry %q; want %d %q retry %q", i, rec.Code, rec.Header().Get("Ratelimit"),
				rec.Header().Get("Retry-After"), s.status, s.state, s.retryAfter)
		}
		if got := rec.Header().Get("Ratelimit-Policy"); got != `"m";q=3;w=1` {
			t.Fatalf("policy %q", got)
		}
	}
}

func TestGCRAExact(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := newGCRA(2, 2, 100, true, t0) // 500ms apart, burst 2
	a := Key{IP: netip.MustParseAddr("192.0.2.1")}
	b := Key{IP: netip.MustParseAddr("192.0.2.2")}
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for i, s := range []struct {
		k          Key
		ms         int
		allowed    bool
		remaining  int
		retryAfter time.Duration
	}{
		{a, 0, true, 1, 0},
		{a, 0, true, 0, 0},
		{a, 0, false, 0, 500 * time.Millisecond},
		{b, 0, true, 1, 0}, // keys are independent
		{a, 499, false, 0, time.Millisecond},
		{a, 500, true, 0, 0},
		{a, 2000, true, 1, 0},
	} {
		d := g.Allow(s.k, at(s.ms))
		if d.Allowed != s.allowed || d.Remaining != s.remaining || d.RetryAfter != s.retryAfter {
			t.Fatalf("step %d: %+v; want allowed %v remaining %d retry %v", i, d, s.allowed, s.remaining, s.retryAfter)
		}
	}
}

func TestGCRARatePerMinute(t *testing.T) {
	cfg, err := config.Parse([]byte("[middlewares.m]\ntype = \"rate_limit\"\nrate = \"100/m\"\n[pools.p]\nbackends = [{ url = \"http://127.0.0.1:1\" }]\n[[routes]]\npool = \"p\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Middlewares["m"].Options.(*config.RateLimit)
	g := newGCRA(o.Rate.PerSecond, o.Burst, o.MaxKeys, false, time.Unix(0, 0))
	if g.interval != int64(600*time.Millisecond) || o.Burst != 2 {
		t.Fatalf("interval %v, burst %d; want 600ms and the default of one second's worth (2)", time.Duration(g.interval), o.Burst)
	}
}

// Requests without the key header share one bucket; string keys are
// copied, so a request's memory is not kept.
func TestGCRAStringKeys(t *testing.T) {
	t0 := time.Unix(0, 0)
	g := newGCRA(1, 1, 100, false, t0)
	if !g.Allow(Key{}, t0).Allowed || g.Allow(Key{}, t0).Allowed {
		t.Fatal("the empty key is not one shared bucket")
	}
	buf := []byte("tenant-1")
	k := Key{S: string(buf)}
	g.Allow(k, t0)
	buf[7] = '2'
	if g.Allow(Key{S: "tenant-1"}, t0).Allowed {
		t.Fatal("tenant-1 allowed twice")
	}
}

func TestGCRAHardCapAndIdleEviction(t *testing.T) {
	t0 := time.Unix(0, 0)
	for _, maxKeys := range []int{10, 1000, 100_000} {
		g := newGCRA(1, 1, maxKeys, true, t0)
		for i := range 3 * maxKeys {
			g.Allow(Key{IP: ipN(i)}, t0)
			if i%997 == 0 && g.keys() > maxKeys {
				t.Fatalf("max_keys %d: %d keys held", maxKeys, g.keys())
			}
		}
		if n := g.keys(); n > maxKeys || n < maxKeys*9/10 {
			t.Fatalf("max_keys %d: %d keys held after a flood", maxKeys, n)
		}
	}
	// Idle keys (back at their full burst) go at the next sweep.
	g := newGCRA(1, 1, 1000, true, t0)
	for i := range 100 {
		g.Allow(Key{IP: ipN(i)}, t0)
	}
	g.Allow(Key{IP: ipN(0)}, t0.Add(2*time.Minute))
	if n := g.keys(); n != 1 {
		t.Fatalf("%d keys after everyone idled, want 1", n)
	}
}

// A flood of new keys evicts the keys nearest their full burst, not a
// client that is being limited: it cannot reset its bucket that way.
func TestGCRAEvictionSparesLimitedKeys(t *testing.T) {
	t0 := time.Unix(0, 0)
	g := newGCRA(1, 10, 100, true, t0)
	hot := Key{IP: netip.MustParseAddr("198.51.100.1")}
	for range 10 {
		g.Allow(hot, t0)
	}
	for i := range 10_000 {
		g.Allow(Key{IP: ipN(i)}, t0)
	}
	if g.Allow(hot, t0).Allowed {
		t.Fatal("the limited client got a fresh bucket after a key flood")
	}
}

func ipN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// A successful check is cached: the second request with the same
// credentials does not run bcrypt; a wrong password always does and is
// never cached; entries expire.
func TestBasicAuthCache(t *testing.T) {
	c := newClock()
	_, m := buildOne(t, `
[middlewares.m]
type = "basic_auth"
users = { alice = "$2a$04$Ls1ZsgTInmKe3Y/s6nh27.wNbxfHzUEeKLIaAUe3CyQIeoM7LVMta" }
`, Env{Now: c.Now})
	ba := m.(*basicAuth)
	calls := 0
	compare := ba.compare
	ba.compare = func(h, p []byte) error { calls++; return compare(h, p) }
	h := ba.Wrap(ok, "r")
	req := func(user, pass string) int {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		rec, _ := serve(h, r, "192.0.2.1")
		return rec.Code
	}
	for i, s := range []struct {
		user, pass string
		advance    time.Duration
		status     int
		calls      int
	}{
		{"alice", "secret", 0, 200, 1},
		{"alice", "secret", 0, 200, 1}, // cached
		{"alice", "wrong", 0, 401, 2},
		{"alice", "wrong", 0, 401, 3}, // failures are not cached
		{"bob", "secret", 0, 401, 4},  // unknown users pay bcrypt too
		{"alice", "secret", 4 * time.Minute, 200, 4},
		{"alice", "secret", 2 * time.Minute, 200, 5}, // expired, checked again
	} {
		c.Advance(s.advance)
		if got := req(s.user, s.pass); got != s.status || calls != s.calls {
			t.Fatalf("step %d: status %d, bcrypt calls %d; want %d, %d", i, got, calls, s.status, s.calls)
		}
	}
	// The cache holds MACs only.
	for k := range ba.cache.entries {
		if strings.Contains(string(k[:]), "secret") {
			t.Fatal("password in cache key")
		}
	}
}

func TestAuthCacheIsBounded(t *testing.T) {
	c := newAuthCache(50, time.Minute, time.Now)
	for i := range 1000 {
		c.add("u", strings.Repeat("p", i))
	}
	if len(c.entries) > 50 {
		t.Fatalf("%d entries, want at most 50", len(c.entries))
	}
}

// keys counts the keys held.
func (g *gcra) keys() int {
	if g.ips != nil {
		return g.ips.len()
	}
	return g.strs.len()
}

func (t *table[K]) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}
