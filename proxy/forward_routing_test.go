package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNoRouteIs404(t *testing.T) {
	b := startBackend(t, textHandler("ok"))
	p := startProxy(t, `
[pools.p]
backends = [{ url = "${b}" }]

[[routes]]
host = "app.test"
path_prefix = "/app"
pool = "p"
`, map[string]string{"b": b.URL})
	c := newClient(t)

	for _, tc := range []struct{ host, path string }{
		{"other.test", "/app"},
		{"app.test", "/"},
		{"app.test", "/application"},
	} {
		res, body := get(t, c, p.URL+tc.path, tc.host)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s%s: got %d %q, want 404", tc.host, tc.path, res.StatusCode, body)
			continue
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || len(body) > 64 {
			t.Errorf("%s%s: 404 body %q (%s), want short plain text", tc.host, tc.path, body, ct)
		}
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend saw %d requests that matched no route", n)
	}
	if res, _ := get(t, c, p.URL+"/app/x", "app.test"); res.StatusCode != http.StatusOK {
		t.Errorf("matching request got %d", res.StatusCode)
	}
}

func TestRoutingEndToEnd(t *testing.T) {
	// Each backend answers with its name and the request URI it received.
	named := func(name string) string {
		return startBackend(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name+" "+r.URL.RequestURI())
		}).URL
	}
	p := startProxy(t, `
[pools.exact]
backends = [{ url = "${exact}" }]
[pools.wild]
backends = [{ url = "${wild}" }]
[pools.any]
backends = [{ url = "${any}" }]
[pools.api]
backends = [{ url = "${api}" }]

[[routes]]
host = "app.example.test"
pool = "exact"

[[routes]]
host = "*.example.test"
pool = "wild"

[[routes]]
pool = "any"

[[routes]]
host = "app.example.test"
path_prefix = "/api"
strip_prefix = true
pool = "api"
`, map[string]string{"exact": named("exact"), "wild": named("wild"), "any": named("any"), "api": named("api")})
	c := newClient(t)

	cases := []struct{ host, uri, want string }{
		{"app.example.test", "/", "exact /"},
		{"APP.Example.Test:8080", "/x", "exact /x"},
		{"app.example.test.", "/x", "exact /x"},
		{"shop.example.test", "/", "wild /"},
		{"a.b.example.test", "/", "any /"}, // a wildcard covers one label
		{"example.test", "/", "any /"},
		{"elsewhere.test", "/x?y=1", "any /x?y=1"},
		{"app.example.test", "/api/users?id=7&sort=asc", "api /users?id=7&sort=asc"},
		{"app.example.test", "/api", "api /"},
		{"app.example.test", "/api/", "api /"},
		{"app.example.test", "/api/a%2Fb", "api /a%2Fb"},
		{"app.example.test", "/apix", "exact /apix"},
		{"shop.example.test", "/api/users", "wild /api/users"}, // strip_prefix is per route
	}
	for _, tc := range cases {
		res, body := get(t, c, p.URL+tc.uri, tc.host)
		if res.StatusCode != http.StatusOK || body != tc.want {
			t.Errorf("Host %s, %s: got %d %q, want %q", tc.host, tc.uri, res.StatusCode, body, tc.want)
		}
	}
}

func TestMalformedRequestsNeverReachBackend(t *testing.T) {
	b := startBackend(t, textHandler("ok"))
	p := startProxy(t, "[server]\nmax_header_bytes = 4096\n"+poolConfig("", b.URL), nil)

	cases := []struct {
		name, request string
		want          int
	}{
		{"space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", http.StatusBadRequest},
		{"header line without colon", "GET / HTTP/1.1\r\nHost: x.test\r\nNoColonHere\r\n\r\n", http.StatusBadRequest},
		{"space in header name", "GET / HTTP/1.1\r\nHost: x.test\r\nBad Name: v\r\n\r\n", http.StatusBadRequest},
		{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", http.StatusBadRequest},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", http.StatusBadRequest},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", http.StatusBadRequest},
		{"malformed request line", "GET /\r\nHost: x.test\r\n\r\n", http.StatusBadRequest},
		{"headers over max_header_bytes", "GET / HTTP/1.1\r\nHost: x.test\r\nX-Big: " + strings.Repeat("a", 12<<10) + "\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if res, body := rawRoundTrip(t, p.Addr, tc.request); res.StatusCode != tc.want {
				t.Errorf("got %d %q, want %d", res.StatusCode, body, tc.want)
			}
		})
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend received %d malformed requests", n)
	}
	// The same headers, well-formed and within the limit, do get through.
	if res, body := rawRoundTrip(t, p.Addr, "GET / HTTP/1.1\r\nHost: x.test\r\nX-Big: "+strings.Repeat("a", 2<<10)+"\r\nConnection: close\r\n\r\n"); res.StatusCode != http.StatusOK {
		t.Errorf("well-formed request got %d %q", res.StatusCode, body)
	}
}

func TestSlowClientClosedAfterReadHeaderTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	b := startBackend(t, textHandler("ok"))
	cfg := parseConfig(t, fmt.Sprintf("[server]\nread_header_timeout = %q\n", timeout.String())+poolConfig("", b.URL), nil)
	_, addr := serveProxy(t, cfg, discardLog, nil)

	cases := []struct {
		name    string
		prefix  string
		trickle bool // keep sending a header byte every 50ms, as slowloris does
	}{
		{"nothing sent", "", false},
		{"partial request line", "GET /slow HT", false},
		{"partial header block", "GET / HTTP/1.1\r\nHost: x.test\r\nX-Slow: ", false},
		{"header trickled byte by byte", "GET / HTTP/1.1\r\nHost: x.test\r\nX-Slow: ", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			conn, _ := dialRaw(t, addr)
			writeRaw(t, conn, tc.prefix)
			if tc.trickle {
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					tick := time.NewTicker(50 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
							if _, err := conn.Write([]byte("a")); err != nil {
								return
							}
						}
					}
				})
				t.Cleanup(func() { close(stop); wg.Wait() })
			}
			// Anything the server sends is read and ignored; only the close counts.
			_, err := io.Copy(io.Discard, conn)
			elapsed := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v", elapsed.Round(time.Millisecond))
			}
			if elapsed < timeout-50*time.Millisecond || elapsed > timeout+2*time.Second {
				t.Errorf("connection closed after %v, want about %v", elapsed.Round(time.Millisecond), timeout)
			}
		})
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend received %d requests from slow clients", n)
	}
}

func TestInFlightReturnsToZero(t *testing.T) {
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	streamStarted := make(chan struct{}, 1)
	stream := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		streamStarted <- struct{}{}
		wait := release
		if r.URL.Query().Has("until-cancelled") {
			wait = nil // only the client's going away ends this one
		}
		select {
		case <-wait:
		case <-r.Context().Done():
		case <-time.After(ioTimeout):
		}
	})
	vars := map[string]string{
		"ok":     startBackend(t, textHandler("ok")).URL,
		"dead":   closedURL(t),
		"drop":   startBackend(t, dropConnection).URL,
		"slow":   startBackend(t, stall).URL,
		"stream": stream.URL,
		"ws":     startBackend(t, upgradeEcho).URL,
	}
	p := startProxy(t, `
[pools.ok]
backends = [{ url = "${ok}" }]
[pools.retry]
backends = [{ url = "${dead}" }, { url = "${ok}" }]
[pools.dead]
backends = [{ url = "${dead}" }]
[pools.drop]
backends = [{ url = "${drop}" }]
[pools.slow]
backends = [{ url = "${slow}" }]
response_header_timeout = "200ms"
[pools.stream]
backends = [{ url = "${stream}" }]
[pools.ws]
backends = [{ url = "${ws}" }]

[[routes]]
path_prefix = "/ok"
pool = "ok"
[[routes]]
path_prefix = "/retry"
pool = "retry"
[[routes]]
path_prefix = "/dead"
pool = "dead"
[[routes]]
path_prefix = "/drop"
pool = "drop"
[[routes]]
path_prefix = "/slow"
pool = "slow"
[[routes]]
path_prefix = "/stream"
pool = "stream"
[[routes]]
path_prefix = "/ws"
pool = "ws"
`, vars)
	c := newClient(t)
	inFlight := func(pool string) int64 {
		for _, pl := range p.Snap.Pools() {
			if pl.Name() == pool {
				return pl.Backends()[0].InFlight()
			}
		}
		t.Fatalf("no pool %q", pool)
		return 0
	}

	for path, want := range map[string]int{
		"/ok": http.StatusOK, "/retry": http.StatusOK, "/dead": http.StatusBadGateway,
		"/drop": http.StatusBadGateway, "/slow": http.StatusGatewayTimeout,
	} {
		for range 3 {
			if res, body := get(t, c, p.URL+path, ""); res.StatusCode != want {
				t.Errorf("%s: got %d %q, want %d", path, res.StatusCode, body, want)
			}
		}
	}

	// A request counts while its body is relayed, so that least_conn sees it...
	res, err := c.Do(newRequest(t, http.MethodGet, p.URL+"/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	waitStream := func() {
		select {
		case <-streamStarted:
		case <-time.After(ioTimeout):
			t.Fatal("streaming backend never started")
		}
	}
	waitStream()
	if n := inFlight("stream"); n != 1 {
		t.Errorf("streaming backend counts %d in flight mid-response, want 1", n)
	}
	releaseOnce()
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()

	// ...and a client that goes away mid-body ends it too.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/stream?until-cancelled", nil)
	if res, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	waitStream()
	cancel()
	_ = res.Body.Close()

	// An upgraded connection counts until it closes.
	conn, br := startUpgrade(t, p.Addr)
	writeRaw(t, conn, "x")
	if _, err := br.ReadByte(); err != nil {
		t.Fatal(err)
	}
	if n := inFlight("ws"); n != 1 {
		t.Errorf("upgraded connection counts %d in flight, want 1", n)
	}
	_ = conn.Close()

	waitNoInFlight(t, p.Snap)
}

// "/public/../admin" is routed and forwarded as "/admin": left as sent, it
// would match the /public route and reach a backend that resolves it to
// /admin behind that route's back.
func TestDotSegmentsResolvedBeforeRouting(t *testing.T) {
	public := startBackend(t, textHandler("public"))
	admin := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "admin "+r.URL.Path)
	})
	p := startProxy(t, `
[pools.public]
backends = [{ url = "${public}" }]
[pools.admin]
backends = [{ url = "${admin}" }]
[[routes]]
path_prefix = "/public"
pool = "public"
[[routes]]
path_prefix = "/admin"
pool = "admin"
`, map[string]string{"public": public.URL, "admin": admin.URL})

	for _, path := range []string{"/public/../admin/x", "/public/./../admin/x", "/public/%2e%2e/admin/x"} {
		res, body := rawRoundTrip(t, p.Addr, "GET "+path+" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
		if res.StatusCode != http.StatusOK || body != "admin /admin/x" {
			t.Errorf("GET %s: got %d %q, want 200 \"admin /admin/x\"", path, res.StatusCode, body)
		}
	}
}
