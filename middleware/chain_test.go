package middleware_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/portico/portico/proxy"
)

func sha(key string) string {
	s := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(s[:])
}

// Server middlewares run first, then the route's in the order listed: each
// headers middleware appends its name to one request header, which the
// backend then shows in order.
func TestChainOrder(t *testing.T) {
	s := start(t, `
[server]
middlewares = ["a"]
[middlewares.a]
type = "headers"
request_add = { X-Order = "a" }
[middlewares.b]
type = "headers"
request_add = { X-Order = "b" }
[middlewares.c]
type = "headers"
request_add = { X-Order = "c" }
[[routes]]
pool = "p"
middlewares = ["c", "b"]
`)
	res, body := get(t, s.URL+"/")
	s.expect(t, res, body, 200, true)
	if got := strings.Join(s.be.lastRequest().Header.Values("X-Order"), ","); got != "a,c,b" {
		t.Fatalf("X-Order at the backend = %q, want a,c,b", got)
	}
}

// A refusal early in the chain stops it: later middlewares and the backend
// never see the request, and the refusal is counted once, by reason.
func TestRefusalStopsChainAndIsCounted(t *testing.T) {
	c := newCounters()
	s := start(t, `
[middlewares.office]
type = "ip_filter"
allow = ["192.0.2.0/24"]
[middlewares.limit]
type = "rate_limit"
rate = 1
burst = 1
[[routes]]
pool = "p"
middlewares = ["office", "limit"]
`, proxy.WithRejections(c.rejections))
	for range 3 {
		res, body := get(t, s.URL+"/")
		s.expect(t, res, body, http.StatusForbidden, false)
		if res.Header.Get("Ratelimit") != "" {
			t.Fatal("rate_limit ran after ip_filter refused")
		}
	}
	if got := c.get("office/forbidden"); got != 3 {
		t.Errorf("office/forbidden = %d, want 3", got)
	}
	if got := c.get("limit/rate_limited"); got != 0 {
		t.Errorf("limit/rate_limited = %d, want 0", got)
	}
	if body := "forbidden\n"; true {
		_, got := get(t, s.URL+"/")
		if got != body {
			t.Errorf("refusal body %q, want %q", got, body)
		}
	}
}

// A client that is not a trusted proxy cannot choose its address with
// X-Forwarded-For: neither ip_filter nor the rate-limit key move.
func TestSpoofedForwardedForIsIgnored(t *testing.T) {
	s := start(t, `
[server]
trusted_proxies = ["10.0.0.0/8"]
[middlewares.office]
type = "ip_filter"
deny = ["127.0.0.0/8"]
[middlewares.limit]
type = "rate_limit"
rate = "1/h"
burst = 1
[[routes]]
pool = "p"
path_prefix = "/filtered"
middlewares = ["office"]
[[routes]]
pool = "p"
path_prefix = "/limited"
middlewares = ["limit"]
`)
	res, body := get(t, s.URL+"/filtered", "X-Forwarded-For: 192.0.2.1")
	s.expect(t, res, body, http.StatusForbidden, false)

	res, body = get(t, s.URL+"/limited", "X-Forwarded-For: 192.0.2.1")
	s.expect(t, res, body, 200, true)
	// Another spoofed address is still the same client, 127.0.0.1.
	res, body = get(t, s.URL+"/limited", "X-Forwarded-For: 192.0.2.2")
	s.expect(t, res, body, http.StatusTooManyRequests, false)
}

// From a trusted proxy, the right-most untrusted X-Forwarded-For entry is
// the client, for every middleware.
func TestTrustedProxyForwardedFor(t *testing.T) {
	s := start(t, `
[server]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
[middlewares.office]
type = "ip_filter"
allow = ["203.0.113.0/24"]
[[routes]]
pool = "p"
middlewares = ["office"]
`)
	// The left entry is whatever the client claimed; 203.0.113.9 is what
	// the trusted proxy 10.1.1.1 saw.
	res, body := get(t, s.URL+"/", "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.1.1")
	s.expect(t, res, body, 200, true)
	res, body = get(t, s.URL+"/", "X-Forwarded-For: 203.0.113.9, 198.51.100.1")
	s.expect(t, res, body, http.StatusForbidden, false)
}

func TestIPFilter(t *testing.T) {
	s := start(t, `
[server]
trusted_proxies = ["127.0.0.1"]
[middlewares.f]
type = "ip_filter"
allow = ["10.0.0.0/8", "192.0.2.7"]
deny = ["10.6.0.0/16"]
[middlewares.denyonly]
type = "ip_filter"
deny = ["198.51.100.0/24"]
[[routes]]
pool = "p"
middlewares = ["f"]
[[routes]]
pool = "p"
path_prefix = "/d"
middlewares = ["denyonly"]
`)
	for _, tc := range []struct {
		path, client string
		want         int
	}{
		{"/", "10.1.2.3", 200},
		{"/", "192.0.2.7", 200},
		{"/", "192.0.2.8", 403},
		{"/", "10.6.1.1", 403}, // deny wins
		{"/", "::ffff:10.1.2.3", 200},
		{"/d", "198.51.100.4", 403},
		{"/d", "203.0.113.1", 200},
	} {
		res, body := get(t, s.URL+tc.path, "X-Forwarded-For: "+tc.client)
		s.expect(t, res, body, tc.want, tc.want == 200)
	}
}

func TestAPIKey(t *testing.T) {
	s := start(t, `
[middlewares.key]
type = "api_key"
keys = { ci = "`+sha("ci-secret")+`", deploy = "`+sha("deploy-secret")+`" }
[[routes]]
pool = "p"
middlewares = ["key"]
`)
	res, body := get(t, s.URL+"/", "X-API-Key: ci-secret", "X-User: admin")
	s.expect(t, res, body, 200, true)
	got := s.be.lastRequest().Header
	if got.Get("X-User") != "ci" || got.Get("X-Api-Key") != "" {
		t.Errorf("backend got X-User %q, X-API-Key %q; want ci and none", got.Get("X-User"), got.Get("X-Api-Key"))
	}
	res, body = get(t, s.URL+"/", "Authorization: Bearer deploy-secret")
	s.expect(t, res, body, 200, true)
	if got := s.be.lastRequest().Header; got.Get("X-User") != "deploy" || got.Get("Authorization") != "" {
		t.Errorf("backend got X-User %q, Authorization %q", got.Get("X-User"), got.Get("Authorization"))
	}
	for _, h := range []string{"X-API-Key: nope", "Authorization: Bearer nope", "X-Other: 1", "Authorization: Basic Y2k6Y2k="} {
		res, body = get(t, s.URL+"/", h)
		s.expect(t, res, body, http.StatusUnauthorized, false)
		if res.Header.Get("Www-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", h)
		}
	}
}

func TestRequestIDAndHeaders(t *testing.T) {
	s := start(t, `
[server]
trusted_proxies = ["10.0.0.0/8"]
middlewares = ["rid", "sec"]
[middlewares.rid]
type = "request_id"
[middlewares.sec]
type = "headers"
request_set = { X-Via = "{scheme}://{host} for {client_ip} id {request_id}", X-Json = "{\"a\": 1}" }
request_remove = ["Cookie"]
response_set = { Strict-Transport-Security = "max-age=63072000" }
response_add = { X-Served-By = "portico" }
response_remove = ["Server"]
[[routes]]
pool = "p"
`)
	// An untrusted peer's ID is replaced.
	res, body := get(t, s.URL+"/x", "X-Request-ID: forged", "Cookie: a=b")
	s.expect(t, res, body, 200, true)
	id := res.Header.Get("X-Request-Id")
	if len(id) != 36 || id[14] != '7' || id == "forged" {
		t.Fatalf("response X-Request-ID %q, want a new UUIDv7", id)
	}
	be := s.be.lastRequest().Header
	if be.Get("X-Request-Id") != id {
		t.Errorf("backend got request ID %q, client %q", be.Get("X-Request-Id"), id)
	}
	host := strings.TrimPrefix(s.URL, "http://")
	if want := "http://" + host + " for 127.0.0.1 id " + id; be.Get("X-Via") != want {
		t.Errorf("X-Via = %q, want %q", be.Get("X-Via"), want)
	}
	if be.Get("X-Json") != `{"a": 1}` || be.Get("Cookie") != "" {
		t.Errorf("X-Json %q, Cookie %q", be.Get("X-Json"), be.Get("Cookie"))
	}
	if res.Header.Get("Strict-Transport-Security") == "" || res.Header.Get("X-Served-By") != "portico" {
		t.Errorf("response headers not applied: %v", res.Header)
	}
	// Portico's own answers get them too.
	res, _ = get(t, s.URL+"/x", "Host: unknown.example") // still routed: host-less route
	if res.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS")
	}
}

func TestRequestIDFromTrustedPeerIsKept(t *testing.T) {
	s := start(t, `
[server]
trusted_proxies = ["127.0.0.1"]
[middlewares.rid]
type = "request_id"
header = "X-Trace"
[[routes]]
pool = "p"
middlewares = ["rid"]
`)
	res, body := get(t, s.URL+"/", "X-Trace: abc-123")
	s.expect(t, res, body, 200, true)
	if res.Header.Get("X-Trace") != "abc-123" || s.be.lastRequest().Header.Get("X-Trace") != "abc-123" {
		t.Fatalf("trusted ID not kept: client %q", res.Header.Get("X-Trace"))
	}
	// Unfit for a log line: replaced even from a trusted peer.
	res, _ = get(t, s.URL+"/", `X-Trace: a "quoted" id`)
	if got := res.Header.Get("X-Trace"); len(got) != 36 {
		t.Fatalf("bad ID kept: %q", got)
	}
}

func TestRedirectAndRewrite(t *testing.T) {
	s := start(t, `
[middlewares.moved]
type = "redirect"
from = '^http://[^/]+/old/(.*)$'
to = "https://new.example/$1"
status = 308
[middlewares.v1]
type = "rewrite"
path_regex = '^/v1/(\w+)'
replacement = "/api/$1"
[[routes]]
pool = "p"
middlewares = ["moved", "v1"]
`)
	res, body := get(t, s.URL+"/old/a/b?q=1")
	s.expect(t, res, body, http.StatusPermanentRedirect, false)
	if loc := res.Header.Get("Location"); loc != "https://new.example/a/b?q=1" {
		t.Errorf("Location = %q", loc)
	}
	res, body = get(t, s.URL+"/v1/users/7")
	s.expect(t, res, body, 200, true)
	if body != "backend saw /api/users/7" {
		t.Errorf("backend saw %q", body)
	}
	res, body = get(t, s.URL+"/other")
	if res.StatusCode != 200 || body != "backend saw /other" {
		t.Errorf("unmatched path: %d %q, want 200 and the path unchanged", res.StatusCode, body)
	}
}
