package proxy

import (
	"io"
	"net/http"
	"net/url"
	"testing"
)

func testTable() routeTable {
	mk := func(name, host, prefix string) *route {
		return &route{name: name, host: host, prefix: prefix}
	}
	return newRouteTable([]*route{
		mk("any-root", "", "/"),
		mk("any-static", "", "/static"),
		mk("exact-root", "app.example.com", "/"),
		mk("exact-api", "app.example.com", "/api"),
		mk("exact-api-v2", "app.example.com", "/api/v2/"),
		mk("wild-root", "*.example.com", "/"),
		mk("wild-admin", "*.example.com", "/admin"),
		mk("only-docs", "docs.example.org", "/docs"),
	})
}

func TestRouteMatch(t *testing.T) {
	table := testTable()
	for _, tc := range []struct {
		host, path, want string
	}{
		// Exact host, longest prefix on whole segments.
		{"app.example.com", "/", "exact-root"},
		{"app.example.com", "/api", "exact-api"},
		{"app.example.com", "/api/users", "exact-api"},
		{"app.example.com", "/apix", "exact-root"},
		{"app.example.com", "/api/v2/x", "exact-api-v2"},
		{"app.example.com", "/api/v2", "exact-api"}, // "/api/v2/" needs the slash
		// Case, port and trailing dot are ignored.
		{"APP.Example.COM:8443", "/api", "exact-api"},
		{"app.example.com.", "/api", "exact-api"},
		// Wildcard: one label only, below exact.
		{"shop.example.com", "/", "wild-root"},
		{"shop.example.com", "/admin/x", "wild-admin"},
		{"a.b.example.com", "/", "any-root"},
		{"example.com", "/", "any-root"},
		// Host-less routes catch the rest.
		{"other.net", "/static/app.js", "any-static"},
		{"", "/", "any-root"},
		{"[::1]:8080", "/", "any-root"},
		{"127.0.0.1", "/static", "any-static"},
		// A host whose routes do not match the path falls through.
		{"docs.example.org", "/docs/intro", "only-docs"},
		{"docs.example.org", "/blog", "any-root"},
	} {
		rt := table.match(tc.host, tc.path)
		got := "<nil>"
		if rt != nil {
			got = rt.name
		}
		if got != tc.want {
			t.Errorf("match(%q, %q) = %s, want %s", tc.host, tc.path, got, tc.want)
		}
	}
}

func TestRouteNoMatch(t *testing.T) {
	table := newRouteTable([]*route{{name: "api", prefix: "/api"}, {name: "h", host: "a.com", prefix: "/"}})
	for _, path := range []string{"/", "/apix", "*", ""} {
		if rt := table.match("b.com", path); rt != nil {
			t.Errorf("match(b.com, %q) = %s, want no route", path, rt.name)
		}
	}
}

func TestRouteMatchAllocatesNothing(t *testing.T) {
	table := testTable()
	for _, host := range []string{"app.example.com", "APP.EXAMPLE.COM:443", "shop.example.com", "nowhere.test"} {
		if n := testing.AllocsPerRun(100, func() { table.match(host, "/api/users") }); n != 0 {
			t.Errorf("match(%q) allocates %.0f times, want 0", host, n)
		}
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	table := testTable()
	for _, bc := range []struct{ name, host string }{
		{"exact", "app.example.com"},
		{"exact-uppercase-port", "App.Example.com:8443"},
		{"wildcard", "shop.example.com"},
		{"hostless", "other.net"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				table.match(bc.host, "/api/v2/users")
			}
		})
	}
}

func TestDotSegments(t *testing.T) {
	for _, tc := range []struct {
		path string
		dot  bool
		want string
	}{
		{"/a/b", false, "/a/b"},
		{"/.well-known/acme", false, "/.well-known/acme"},
		{"/a..b/c.", false, "/a..b/c."},
		{"/public/../admin", true, "/admin"},
		{"/public/./x/", true, "/public/x/"},
		{"/..", true, "/"},
		{"/a/..", true, "/"},
		{"/../../etc/passwd", true, "/etc/passwd"},
		{"//admin", true, "/admin"},
		{"/a//b/", true, "/a/b/"},
		{"/a/b//", true, "/a/b/"},
		{"///", true, "/"},
	} {
		if got := needsCleaning(tc.path); got != tc.dot {
			t.Errorf("needsCleaning(%q) = %v, want %v", tc.path, got, tc.dot)
		}
		if tc.dot {
			u := &url.URL{Path: tc.path, RawPath: tc.path}
			cleanPath(u)
			if u.Path != tc.want || u.RawPath != "" {
				t.Errorf("cleanPath(%q) = %q (raw %q), want %q", tc.path, u.Path, u.RawPath, tc.want)
			}
		}
	}
}

// "//admin/x", and "/%2Fadmin/x", which is the same path once decoded, are
// routed and forwarded as "/admin/x". Left as sent, they would miss the
// /admin route and its middlewares, match "/", and reach a backend that
// merges the slashes (as nginx, Apache and many frameworks do) and serves
// /admin/x to anyone.
func TestEmptySegmentsMergedBeforeRouting(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "backend "+r.URL.Path)
	})
	p := startProxy(t, `
[middlewares.nobody]
type = "ip_filter"
allow = ["192.0.2.0/24"]
[pools.p]
backends = [{ url = "${be}" }]
[[routes]]
pool = "p"
[[routes]]
path_prefix = "/admin"
pool = "p"
middlewares = ["nobody"]
`, map[string]string{"be": be.URL})

	for _, path := range []string{"/admin/x", "//admin/x", "///admin/x", "/%2Fadmin/x", "/.//admin/x"} {
		res, body := rawRoundTrip(t, p.Addr, "GET "+path+" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s: got %d %q, want 403 from the /admin route's ip_filter", path, res.StatusCode, body)
		}
	}
	if n := be.hits.Load(); n != 0 {
		t.Errorf("the backend got %d requests for /admin, want none", n)
	}
	res, body := rawRoundTrip(t, p.Addr, "GET /public//x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
	if res.StatusCode != http.StatusOK || body != "backend /public/x" {
		t.Errorf("GET /public//x: got %d %q, want 200 \"backend /public/x\"", res.StatusCode, body)
	}
}
