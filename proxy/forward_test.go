package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHopByHopHeadersRemoved(t *testing.T) {
	cases := []struct {
		name string
		// Header lines and framing of the client's request and of the
		// backend's response; both always carry X-End-To-End, which must pass.
		request, response string
		// Headers that must not cross the proxy in each direction.
		dropToBackend, dropToClient []string
	}{
		{
			name: "standard hop-by-hop headers, chunked bodies",
			request: "Connection: keep-alive\r\n" +
				"Keep-Alive: timeout=5\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n" +
				// Without "Connection: Upgrade" this is no upgrade request.
				"Upgrade: websocket\r\n" +
				"Transfer-Encoding: chunked\r\n" +
				"\r\n" +
				"5\r\nhello\r\n0\r\n\r\n",
			response: "Keep-Alive: timeout=5, max=100\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"Proxy-Authenticate: Basic realm=\"backend\"\r\n" +
				"Upgrade: websocket\r\n" +
				"Transfer-Encoding: chunked\r\n" +
				"\r\n" +
				"5\r\nworld\r\n0\r\n\r\n",
			dropToBackend: []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Upgrade"},
			dropToClient:  []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade"},
		},
		{
			name: "headers named in Connection, one line",
			request: "Connection: keep-alive, X-Secret, x-other-secret\r\n" +
				"X-Secret: client-to-proxy\r\n" +
				"X-Other-Secret: client-to-proxy\r\n" +
				"Content-Length: 5\r\n" +
				"\r\n" +
				"hello",
			response: "Connection: X-Secret-Resp\r\n" +
				"X-Secret-Resp: backend-to-proxy\r\n" +
				"Content-Length: 5\r\n" +
				"\r\n" +
				"world",
			dropToBackend: []string{"Connection", "X-Secret", "X-Other-Secret"},
			dropToClient:  []string{"Connection", "X-Secret-Resp"},
		},
		{
			name: "headers named in Connection, several lines",
			request: "Connection: keep-alive\r\n" +
				"Connection: X-Secret\r\n" +
				"X-Secret: client-to-proxy\r\n" +
				"Content-Length: 5\r\n" +
				"\r\n" +
				"hello",
			response: "Connection: keep-alive\r\n" +
				"Connection: X-Secret-Resp\r\n" +
				"X-Secret-Resp: backend-to-proxy\r\n" +
				"Content-Length: 5\r\n" +
				"\r\n" +
				"world",
			dropToBackend: []string{"Connection", "X-Secret"},
			dropToClient:  []string{"Connection", "X-Secret-Resp"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Raw connections on both sides, because net/http would itself
			// drop or rewrite some of these headers and hide what the proxy did.
			backendURL, reqs := startWireBackend(t, "HTTP/1.1 200 OK\r\nX-End-To-End: kept\r\n"+tc.response)
			p := startPool(t, "", backendURL)

			conn, br := dialRaw(t, p.Addr)
			writeRaw(t, conn, "POST /hop HTTP/1.1\r\nHost: hop.test\r\nX-End-To-End: kept\r\n"+tc.request)
			res, err := readWireMessage(br, false)
			if err != nil {
				t.Fatalf("reading response: %v", err)
			}
			var req wireMessage
			select {
			case req = <-reqs:
			case <-time.After(ioTimeout):
				t.Fatalf("backend received no request; client got %q %q", res.StartLine, res.Body)
			}

			checkHopByHop(t, "backend", req, tc.dropToBackend, "hello")
			if !strings.HasPrefix(res.StartLine, "HTTP/1.1 200 ") {
				t.Errorf("client got status line %q, want 200", res.StartLine)
			}
			checkHopByHop(t, "client", res, tc.dropToClient, "world")
		})
	}
}

// checkHopByHop asserts what one side of the proxy received: none of drop,
// the end-to-end header, a body intact, and at most the one
// Transfer-Encoding that the proxy's own framing needs.
func checkHopByHop(t *testing.T, side string, m wireMessage, drop []string, body string) {
	t.Helper()
	for _, name := range drop {
		if v, ok := m.Header[name]; ok {
			t.Errorf("%s received hop-by-hop header %s: %q", side, name, v)
		}
	}
	if got := m.Header["X-End-To-End"]; len(got) != 1 || got[0] != "kept" {
		t.Errorf("%s received X-End-To-End %q, want [kept]", side, got)
	}
	if te := m.Header["Transfer-Encoding"]; len(te) > 1 || len(te) == 1 && te[0] != "chunked" {
		t.Errorf("%s received Transfer-Encoding %q, want none or a single chunked", side, te)
	}
	if m.Body != body {
		t.Errorf("%s received body %q, want %q", side, m.Body, body)
	}
}

func TestTEOnlyTrailersReachesBackend(t *testing.T) {
	got := make(chan []string, 1)
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Values("Te")
	})
	p := startPool(t, "", b.URL)
	c := newClient(t)

	cases := []struct {
		te   string
		want []string
	}{
		{"trailers", []string{"trailers"}},
		{"gzip", nil},
		{"gzip, trailers", []string{"trailers"}},
	}
	for _, tc := range cases {
		t.Run(tc.te, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, p.URL, nil)
			req.Header["TE"] = []string{tc.te}
			if res, body := do(t, c, req); res.StatusCode != http.StatusOK {
				t.Fatalf("status %d %q", res.StatusCode, body)
			}
			if te := <-got; !equalStrings(te, tc.want) {
				t.Errorf("client sent TE: %s; backend received Te %q, want %q", tc.te, te, tc.want)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestForwardedHeaders(t *testing.T) {
	// Every header a client could use to claim another address, scheme or
	// host, including spellings with underscores that some backends
	// (CGI, PHP, nginx with underscores_in_headers) read as the real thing.
	forged := http.Header{
		"X-Forwarded-For":   {"1.2.3.4"},
		"X-Forwarded-Proto": {"https"},
		"X-Forwarded-Host":  {"forged.test"},
		"Forwarded":         {"for=1.2.3.4;proto=https"},
		"X_Forwarded_For":   {"6.6.6.6"},
		"X_forwarded_proto": {"https"},
		"X_Forwarded_Host":  {"forged.test"},
		"X_Real_Ip":         {"6.6.6.6"},
		"X-Real-Ip":         {"6.6.6.6"},
	}
	cases := []struct {
		name     string
		trusted  string // trusted_proxies
		sent     http.Header
		wantFor  string
		wantProt string
		wantHost string
		wantFwd  string // Forwarded
		wantReal string // X-Real-IP
	}{
		{
			name: "untrusted peer, forged headers replaced", sent: forged,
			wantFor: "127.0.0.1", wantProt: "http", wantHost: "app.test:8080",
		},
		{
			name: "untrusted peer, no headers", sent: http.Header{},
			wantFor: "127.0.0.1", wantProt: "http", wantHost: "app.test:8080",
		},
		{
			name: "trusted peer, chain extended", trusted: `"127.0.0.0/8"`,
			sent: http.Header{
				"X-Forwarded-For":   {"1.2.3.4"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"public.test"},
				"Forwarded":         {"for=1.2.3.4;proto=https"},
				"X-Real-Ip":         {"1.2.3.4"},
			},
			wantFor: "1.2.3.4, 127.0.0.1", wantProt: "https", wantHost: "public.test",
			wantFwd: "for=1.2.3.4;proto=https", wantReal: "1.2.3.4",
		},
		{
			name: "trusted peer, several X-Forwarded-For lines", trusted: `"127.0.0.1"`,
			sent:    http.Header{"X-Forwarded-For": {"1.2.3.4", "10.0.0.1, 10.0.0.2"}},
			wantFor: "1.2.3.4, 10.0.0.1, 10.0.0.2, 127.0.0.1", wantProt: "http", wantHost: "app.test:8080",
		},
		{
			name: "trusted peer, no headers", trusted: `"127.0.0.0/8"`, sent: http.Header{},
			wantFor: "127.0.0.1", wantProt: "http", wantHost: "app.test:8080",
		},
		{
			name: "peer outside the trusted range", trusted: `"10.0.0.0/8"`, sent: forged,
			wantFor: "127.0.0.1", wantProt: "http", wantHost: "app.test:8080",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan *http.Request, 1)
			b := startBackend(t, func(w http.ResponseWriter, r *http.Request) { got <- r })
			p := startProxy(t, "[server]\ntrusted_proxies = ["+tc.trusted+"]\n"+poolConfig("", b.URL), nil)

			req := newRequest(t, http.MethodGet, p.URL+"/", nil)
			req.Host = "app.test:8080"
			for k, v := range tc.sent {
				req.Header[k] = v
			}
			if res, body := do(t, newClient(t), req); res.StatusCode != http.StatusOK {
				t.Fatalf("status %d %q", res.StatusCode, body)
			}
			r := <-got

			for name, want := range map[string]string{
				"X-Forwarded-For":   tc.wantFor,
				"X-Forwarded-Proto": tc.wantProt,
				"X-Forwarded-Host":  tc.wantHost,
				"Forwarded":         tc.wantFwd,
				"X-Real-Ip":         tc.wantReal,
			} {
				var wantVals []string
				if want != "" {
					wantVals = []string{want}
				}
				if v := r.Header.Values(name); !equalStrings(v, wantVals) {
					t.Errorf("backend received %s %q, want %q", name, v, wantVals)
				}
			}
			for k, v := range r.Header {
				if strings.Contains(k, "_") {
					t.Errorf("backend received lookalike header %s: %q", k, v)
				}
			}
			if r.Host != "app.test:8080" {
				t.Errorf("backend received Host %q, want the client's app.test:8080", r.Host)
			}
		})
	}
}
