package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/internal/testlog"
)

// The request-target and the number of header fields are bounded: 414 and
// 431, answered without the backend, and the connection closed.
func TestRequestLimits(t *testing.T) {
	b := startBackend(t, textHandler("ok"))
	p := startProxy(t, "[server]\nmax_header_bytes = 1048576\n"+poolConfig("", b.URL), nil)
	few := startProxy(t, "[server]\nmax_header_count = 5\n"+poolConfig("", b.URL), nil)

	fields := func(n int) string {
		var s strings.Builder
		for i := range n {
			fmt.Fprintf(&s, "X-F%d: v\r\n", i)
		}
		return s.String()
	}
	uri := func(n int) string { return "/" + strings.Repeat("a", n-1) }
	cases := []struct {
		name    string
		addr    string
		request string
		status  int
	}{
		{"request-target of 8 KiB", p.Addr, "GET " + uri(8<<10) + " HTTP/1.1\r\nHost: h.test\r\n\r\n", 200},
		{"request-target over 8 KiB", p.Addr, "GET " + uri(8<<10+1) + " HTTP/1.1\r\nHost: h.test\r\n\r\n", 414},
		// Host is a field too, but net/http moves it out of the header map.
		{"100 header fields", p.Addr, "GET / HTTP/1.1\r\nHost: h.test\r\n" + fields(100) + "\r\n", 200},
		{"101 header fields", p.Addr, "GET / HTTP/1.1\r\nHost: h.test\r\n" + fields(101) + "\r\n", 431},
		{"101 fields of one name", p.Addr, "GET / HTTP/1.1\r\nHost: h.test\r\n" + strings.Repeat("X-Same: v\r\n", 101) + "\r\n", 431},
		{"max_header_count = 5, 5 fields", few.Addr, "GET / HTTP/1.1\r\nHost: h.test\r\n" + fields(5) + "\r\n", 200},
		{"max_header_count = 5, 6 fields", few.Addr, "GET / HTTP/1.1\r\nHost: h.test\r\n" + fields(6) + "\r\n", 431},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.hits.Load()
			conn, br := dialRaw(t, tc.addr)
			writeRaw(t, conn, tc.request)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			forwarded := b.hits.Load() - before
			if tc.status == 200 && forwarded != 1 || tc.status != 200 && forwarded != 0 {
				t.Errorf("backend got %d requests", forwarded)
			}
			if tc.status != 200 && !res.Close {
				t.Errorf("connection kept open after %d", tc.status)
			}
		})
	}
}

// max_body_bytes is per route: a body of the limit passes, by
// Content-Length or chunked; one over it is refused (TestClientBodyErrors);
// a route without it takes any size.
func TestMaxBodyBytes(t *testing.T) {
	b := startBackend(t, echoHandler)
	p := startProxy(t, `
[pools.p]
backends = [{ url = "`+b.URL+`" }]
[[routes]]
path_prefix = "/small"
pool = "p"
max_body_bytes = 16
[[routes]]
pool = "p"
`, nil)
	c := newClient(t)
	body16 := strings.Repeat("b", 16)
	for _, tc := range []struct {
		name, path string
		body       io.Reader
		want       int
	}{
		{"16 bytes by Content-Length", "/small", strings.NewReader(body16), 200},
		{"16 bytes chunked", "/small", io.MultiReader(strings.NewReader(body16)), 200}, // a reader of unknown length
		{"17 bytes by Content-Length", "/small", strings.NewReader(body16 + "b"), 413},
		{"17 bytes chunked", "/small", io.MultiReader(strings.NewReader(body16 + "b")), 413},
		{"1 MiB on a route without a limit", "/other", strings.NewReader(strings.Repeat("b", 1<<20)), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, got := do(t, c, newRequest(t, http.MethodPost, p.URL+tc.path, tc.body))
			if res.StatusCode != tc.want {
				t.Fatalf("status %d %.40q, want %d", res.StatusCode, got, tc.want)
			}
			if tc.want == 200 && !strings.HasPrefix(got, "POST\nbbbb") {
				t.Errorf("backend echoed %.40q", got)
			}
		})
	}
}

// Connections over max_conns or max_conns_per_ip are closed at accept,
// counted, and logged at most once a second; closing one frees its place,
// and new caps (a reload) apply at once to the connections open. Both ways
// of applying a ConnLimit: to any net.Listener, and to a reloadable Listener.
func TestConnLimit(t *testing.T) {
	b := startBackend(t, textHandler("ok"))
	cfg := parseConfig(t, poolConfig("", b.URL), nil)
	ways := map[string]func(t *testing.T, limits *ConnLimit) (addr string, lift func()){
		"any net.Listener": func(t *testing.T, limits *ConnLimit) (string, func()) {
			_, addr := serveProxy(t, cfg, discardLog, func(_ *http.Server, l net.Listener) net.Listener { return limits.Listener(l) })
			return addr, nil
		},
		"a reloadable Listener": func(t *testing.T, limits *ConnLimit) (string, func()) {
			snap, err := NewSnapshot(cfg, discardLog)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := NewServer(&cfg.Server, NewHandler(snap), discardLog)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := Listen("127.0.0.1:0", discardLog)
			if err != nil {
				t.Fatal(err)
			}
			ln.LimitConns(limits)
			g, _ := ln.Serve(srv, nil)
			t.Cleanup(func() { ln.Close(); _ = g.Close(); snap.Close() })
			return ln.Addr().String(), func() { ln.LimitConns(nil) }
		},
	}
	for name, serve := range ways {
		t.Run(name, func(t *testing.T) {
			var logs testlog.Buffer
			limits := NewConnLimit(slog.New(slog.NewTextHandler(&logs, nil)))
			limits.SetLimits(3, 2)
			addr, lift := serve(t, limits)

			// open dials from the given loopback address and completes one
			// request, so the connection is surely accepted; refused
			// connections get EOF.
			open := func(from string) (net.Conn, bool) {
				d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
				conn, err := d.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
				_ = conn.SetDeadline(time.Now().Add(ioTimeout))
				writeRaw(t, conn, "GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
				res, err := http.ReadResponse(bufio.NewReader(conn), nil)
				return conn, err == nil && res.StatusCode == http.StatusOK
			}
			a1, ok1 := open("127.0.0.1")
			_, ok2 := open("127.0.0.1")
			_, ok3 := open("127.0.0.1") // over max_conns_per_ip
			_, ok4 := open("127.0.0.2")
			_, ok5 := open("127.0.0.3") // over max_conns
			if !ok1 || !ok2 || ok3 || !ok4 || ok5 {
				t.Fatalf("served %v, want the 1st, 2nd and 4th connections only", []bool{ok1, ok2, ok3, ok4, ok5})
			}
			if total, perIP := limits.Refused(); total != 1 || perIP != 1 {
				t.Errorf("Refused() = %d, %d, want 1, 1", total, perIP)
			}
			if n := strings.Count(logs.String(), "client connections refused"); n != 1 {
				t.Errorf("%d log lines for 2 refusals within a second, want 1:\n%s", n, logs.String())
			}
			_ = a1.Close()
			waitFor(t, "a freed place to be taken", func() bool {
				conn, ok := open("127.0.0.1")
				_ = conn.Close()
				return ok
			})

			limits.SetLimits(0, 0)
			if _, ok := open("127.0.0.1"); !ok {
				t.Error("a connection refused with the caps off")
			}
			limits.SetLimits(3, 0) // 3 are open already
			if _, ok := open("127.0.0.4"); ok {
				t.Error("a connection served over a cap lowered below the connections open")
			}
			if lift != nil {
				lift()
				if _, ok := open("127.0.0.4"); !ok {
					t.Error("a connection refused on a Listener whose caps were lifted")
				}
			}
		})
	}
}

// The same limits hold for HTTP/2 (here h2c with prior knowledge), where a
// refusal ends only its stream: all requests share one connection.
func TestLimitsOverHTTP2(t *testing.T) {
	b := startBackend(t, echoHandler)
	cfg := parseConfig(t, "[server]\nh2c = true\n"+poolConfig("", b.URL)+"max_body_bytes = 16\n", nil)
	var conns atomic.Int64
	_, addr := serveProxy(t, cfg, discardLog, func(srv *http.Server, ln net.Listener) net.Listener {
		srv.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		return ln
	})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}

	body16 := strings.Repeat("b", 16)
	many := newRequest(t, http.MethodGet, "http://"+addr+"/", nil)
	for i := range 101 {
		many.Header.Set(fmt.Sprintf("X-F%d", i), "v")
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
		want int
	}{
		{"16-byte body of unknown length", newRequest(t, http.MethodPost, "http://"+addr+"/", io.MultiReader(strings.NewReader(body16))), 200},
		{"17-byte body of unknown length", newRequest(t, http.MethodPost, "http://"+addr+"/", io.MultiReader(strings.NewReader(body16+"b"))), 413},
		{"17-byte body by Content-Length", newRequest(t, http.MethodPost, "http://"+addr+"/", strings.NewReader(body16+"b")), 413},
		{"101 header fields", many, 431},
		{"request-target over 8 KiB", newRequest(t, http.MethodGet, "http://"+addr+"/"+strings.Repeat("a", 8<<10), nil), 414},
		{"a plain GET after them", newRequest(t, http.MethodGet, "http://"+addr+"/", nil), 200},
	} {
		res, body := do(t, c, tc.req)
		if res.ProtoMajor != 2 || res.StatusCode != tc.want {
			t.Errorf("%s: HTTP/%d %d %.40q, want HTTP/2 %d", tc.name, res.ProtoMajor, res.StatusCode, body, tc.want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for all requests, want 1: a refusal must not end the HTTP/2 connection", n)
	}
}
