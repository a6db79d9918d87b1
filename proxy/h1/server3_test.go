package h1

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/internal/testcert"
	"github.com/portico/portico/internal/testserve"
)

// Malformed input, limits, handler panics, TLS and ALPN, and concurrency.

// Malformed requests get an error status and a closed connection, and
// never reach the handler. want is net/http's status; the suite pins its
// class, and the exact code where the code carries meaning (exact).
func TestServerRejectsMalformedRequests(t *testing.T) {
	cases := []struct {
		name, req string
		want      int
		exact     bool
	}{
		{"no version", "GET /\r\nHost: h\r\n\r\n", 400, false},
		{"HTTP/9.9", "GET / HTTP/9.9\r\nHost: h\r\n\r\n", 505, true},
		{"bad method", "G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, false},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400, false},
		{"two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, false},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n", 400, false},
		{"invalid Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n1", 400, false},
		{"negative Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400, false},
		{"differing Content-Lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, false},
		{"Transfer-Encoding gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501, true},
		{"Transfer-Encoding chunked, gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501, true},
		{"NUL in a header value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400, false},
		{"NUL in the target", "GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n", 400, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {})
			sc := dialSuite(t, s.addr)
			sc.send(tc.req)
			resp, _, err := sc.tryResponse("GET")
			switch {
			case err != nil:
				t.Errorf("no response: %v", err)
			case tc.exact && resp.StatusCode != tc.want:
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			case resp.StatusCode/100 != tc.want/100:
				t.Errorf("status %d, want %dxx", resp.StatusCode, tc.want/100)
			}
			sc.expectClosed()
			if n := s.calls.Load(); n != 0 {
				t.Errorf("the handler was called %d times", n)
			}
		})
	}
}

func TestServerMaxHeaderBytes(t *testing.T) {
	s := startSuite(t, &http.Server{
		MaxHeaderBytes: 1024,
		Handler:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
	})
	sc := dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\nX-Fits: " + strings.Repeat("a", 500) + "\r\n\r\n")
	if resp, _ := sc.response("GET"); resp.StatusCode != 200 {
		t.Fatalf("a head under the limit got %d", resp.StatusCode)
	}
	// net/http allows 4 KiB of slack over MaxHeaderBytes; 16 KiB is over
	// either way.
	sc = dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n")
	if resp, _ := sc.response("GET"); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	sc.expectClosed()
	if n := s.calls.Load(); n != 1 {
		t.Errorf("%d requests reached the handler, want 1", n)
	}
}

func TestServerBadChunkedBody(t *testing.T) {
	errs := make(chan error, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errs <- err
		w.WriteHeader(http.StatusBadRequest)
	})
	sc := dialSuite(t, s.addr)
	sc.send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
	if err := waitFor(t, errs, "the handler"); err == nil {
		t.Error("reading a body with a non-hex chunk size succeeded")
	}
}

func TestServerHandlerPanics(t *testing.T) {
	var calls atomic.Int64
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch r.URL.Path {
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/abort-after-flush":
			_, _ = io.WriteString(w, "partial")
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case "/panic":
			panic("boom")
		}
		_, _ = io.WriteString(w, "ok")
	})
	t.Run("abort before a response", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("GET /abort HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, _, err := sc.tryResponse("GET"); err == nil {
			t.Errorf("got a response, status %d", resp.StatusCode)
		}
		sc.expectClosed()
	})
	t.Run("abort truncates a flushed response", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("GET /abort-after-flush HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, body, err := sc.tryResponse("GET"); err == nil {
			t.Errorf("a whole response: %d %q", resp.StatusCode, body)
		}
		sc.expectClosed()
	})
	t.Run("other panics leave the server serving", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("GET /panic HTTP/1.1\r\nHost: h\r\n\r\n")
		sc.expectClosed()
		sc = dialSuite(t, s.addr)
		sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, body := sc.response("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Errorf("after a panic: %d %q", resp.StatusCode, body)
		}
	})
}

func TestServerTLS(t *testing.T) {
	// Generated in memory, as the brief asks: no key is committed.
	ca := testcert.NewCA(t)
	cert := ca.Issue(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "127.0.0.1").TLS
	roots := ca.Pool()
	alpn := make(chan string, 1)
	s := startSuite(t, &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			"h2": func(_ *http.Server, c *tls.Conn, _ http.Handler) {
				alpn <- c.ConnectionState().NegotiatedProtocol
				_, _ = io.WriteString(c, "marker")
				_ = c.Close()
			},
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || !r.TLS.HandshakeComplete {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			_, _ = fmt.Fprintf(w, "%s %s", r.Proto, r.TLS.ServerName)
		}),
	})
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}

	t.Run("HTTP/1.1 over TLS", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: false}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: waitBound}
		for range 2 {
			resp, err := c.Get("https://" + s.addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" || string(b) != "HTTP/1.1 " {
				t.Errorf("got %s %d %q, want HTTP/1.1 200 with r.TLS set", resp.Proto, resp.StatusCode, b)
			}
		}
	})
	t.Run("ALPN h2 goes to TLSNextProto", func(t *testing.T) {
		cfg := clientTLS.Clone()
		cfg.NextProtos = []string{"h2"}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitBound}, "tcp", s.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Errorf("negotiated %q, want h2", p)
		}
		if p := waitFor(t, alpn, "TLSNextProto[h2]"); p != "h2" {
			t.Errorf("TLSNextProto saw %q", p)
		}
		_ = c.SetReadDeadline(time.Now().Add(waitBound))
		if b, _ := io.ReadAll(c); string(b) != "marker" {
			t.Errorf("read %q, want only TLSNextProto's marker", b)
		}
	})
	t.Run("plain HTTP on the TLS port gets 400", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, _ := sc.response("GET"); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("got %d, want 400", resp.StatusCode)
		}
	})
}

// Concurrent keep-alive clients with bodies, under -race: every response
// is the one for its request.
func TestServerConcurrentKeepAlive(t *testing.T) {
	var conns testserve.Conns
	cfg := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			_, _ = fmt.Fprintf(w, "%s:%s", r.URL.Query().Get("i"), b)
		}),
	}
	conns.Track(cfg)
	s := startSuite(t, cfg)
	const workers, requests = 8, 200
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range requests {
				id := fmt.Sprintf("%d-%d", g, i)
				body := strings.Repeat(id, i%7+1)
				resp, err := c.Post("http://"+s.addr+"/?i="+id, "text/plain", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if want := id + ":" + body; err != nil || resp.StatusCode != 200 || string(b) != want {
					t.Errorf("got %d %q, %v, want 200 %q", resp.StatusCode, b, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := conns.Opened.Load(); n > 4*workers {
		t.Errorf("%d connections for %d requests: keep-alive is not working", n, workers*requests)
	}
}
