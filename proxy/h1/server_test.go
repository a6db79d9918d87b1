package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A differential conformance suite for the client-facing HTTP/1.1 server.
// It pins what a reverse proxy's handlers rely on (status codes, framing,
// which requests reach the handler, when connections close, timing bounds)
// and leaves alone what they must not (error body text, header order, Date,
// Server). Every test goes through serveImpl, so the same suite validates
// net/http's server today and Portico's own server once it replaces it.

// serveImpl starts cfg serving on ln. It returns the server's Shutdown and
// Close, and a channel that receives Serve's result when Serve returns.
// It is net/http's http.Server today, to validate the suite; switching it to
// h1.Server runs the suite against Portico's server.
var serveImpl = func(cfg *http.Server, ln net.Listener) (shutdown func(context.Context) error, closeNow func() error, served <-chan error) {
	s := NewServer(cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	return s.Shutdown, s.Close, done
}

// waitBound is how long a test waits for something that must happen (a
// close, a cancellation): generous, because the machine is loaded.
const waitBound = 2 * time.Second

// suiteServer is a server under test on a loopback listener.
type suiteServer struct {
	addr     string
	shutdown func(context.Context) error
	closeNow func() error
	served   chan struct{} // closed when Serve returns
	calls    atomic.Int64  // requests that reached cfg.Handler
}

// startSuite serves cfg on a fresh loopback listener, wrapped in TLS when
// cfg.TLSConfig is set, and counts the requests that reach cfg.Handler.
func startSuite(t *testing.T, cfg *http.Server) *suiteServer {
	t.Helper()
	if cfg.ErrorLog == nil {
		cfg.ErrorLog = log.New(io.Discard, "", 0)
	}
	s := &suiteServer{served: make(chan struct{})}
	h := cfg.Handler
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		h.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	if cfg.TLSConfig != nil {
		ln = tls.NewListener(ln, cfg.TLSConfig)
	}
	var served <-chan error
	s.shutdown, s.closeNow, served = serveImpl(cfg, ln)
	go func() {
		<-served
		close(s.served)
	}()
	t.Cleanup(func() {
		_ = s.closeNow()
		select {
		case <-s.served:
		case <-time.After(waitBound):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

// serve starts a plain server with handler h.
func serveHandler(t *testing.T, h http.HandlerFunc) *suiteServer {
	t.Helper()
	return startSuite(t, &http.Server{Handler: h})
}

// suiteConn is a raw client connection: the test writes bytes and parses
// what comes back with http.ReadResponse.
type suiteConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialSuite(t *testing.T, addr string) *suiteConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitBound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &suiteConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (sc *suiteConn) send(s string) {
	sc.t.Helper()
	_ = sc.c.SetWriteDeadline(time.Now().Add(waitBound))
	if _, err := io.WriteString(sc.c, s); err != nil {
		sc.t.Fatalf("write: %v", err)
	}
}

// tryResponse reads one response (to a request of the given method) and
// its whole body.
func (sc *suiteConn) tryResponse(method string) (*http.Response, string, error) {
	_ = sc.c.SetReadDeadline(time.Now().Add(waitBound))
	resp, err := http.ReadResponse(sc.br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func (sc *suiteConn) response(method string) (*http.Response, string) {
	sc.t.Helper()
	resp, body, err := sc.tryResponse(method)
	if err != nil {
		sc.t.Fatalf("reading the response: %v", err)
	}
	return resp, body
}

// expectClosed reads until the server ends the connection, and fails if
// it is still open after waitBound. It returns the bytes that came first.
func (sc *suiteConn) expectClosed() string {
	sc.t.Helper()
	_ = sc.c.SetReadDeadline(time.Now().Add(waitBound))
	b, err := io.ReadAll(sc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		sc.t.Fatalf("connection still open after %v (read %q)", waitBound, b)
	}
	return string(b)
}

// expectOpen checks that nothing arrives and the connection stays open for
// d: only a server bug can make it fail.
func (sc *suiteConn) expectOpen(d time.Duration) {
	sc.t.Helper()
	_ = sc.c.SetReadDeadline(time.Now().Add(d))
	b, err := sc.br.Peek(1)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		sc.t.Fatalf("want a quiet open connection, got %q, %v", b, err)
	}
}

// waitFor receives from ch or fails after waitBound.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitBound):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// seen is what a handler observed of a request.
type seen struct {
	Method, RequestURI, Path, RawQuery, Host, Proto string
	ProtoMajor, ProtoMinor                          int
	RemoteAddr                                      string
	Header                                          http.Header
	ContentLength                                   int64
	TransferEncoding                                []string
	TLS                                             bool
	Body                                            string
	BodyErr                                         error
}

func observe(r *http.Request) seen {
	b, err := io.ReadAll(r.Body)
	return seen{
		Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Host: r.Host, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		RemoteAddr: r.RemoteAddr, Header: r.Header.Clone(), ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, TLS: r.TLS != nil, Body: string(b), BodyErr: err,
	}
}

func TestServerRequestFields(t *testing.T) {
	got := make(chan seen, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil {
			t.Error("r.Body is nil")
			return
		}
		got <- observe(r)
	})
	sc := dialSuite(t, s.addr)
	local := sc.c.LocalAddr().String()
	cases := []struct {
		name, req string
		want      seen
	}{
		{"origin-form", "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h.test\r\nx-multi: 1\r\nUSER-agent: t\r\nX-Multi: 2\r\n\r\n",
			seen{Method: "GET", RequestURI: "/a/b?x=1&y=2", Path: "/a/b", RawQuery: "x=1&y=2", Host: "h.test", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}},
		{"absolute-form", "GET http://abs.test/p?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n",
			seen{Method: "GET", RequestURI: "http://abs.test/p?q=1", Path: "/p", RawQuery: "q=1", Host: "abs.test", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}},
		{"content-length", "POST /cl HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\n\r\nhello",
			seen{Method: "POST", RequestURI: "/cl", Path: "/cl", Host: "h.test", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: 5, Body: "hello"}},
		{"chunked", "PUT /ch HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
			seen{Method: "PUT", RequestURI: "/ch", Path: "/ch", Host: "h.test", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1, TransferEncoding: []string{"chunked"}, Body: "abcde"}},
		{"http/1.0", "GET /old HTTP/1.0\r\nHost: h.test\r\n\r\n",
			seen{Method: "GET", RequestURI: "/old", Path: "/old", Host: "h.test", Proto: "HTTP/1.0", ProtoMajor: 1, ProtoMinor: 0}},
	}
	for i, tc := range cases {
		sc.send(tc.req)
		resp, _ := sc.response("GET")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tc.name, resp.StatusCode)
		}
		g := waitFor(t, got, "the handler")
		if g.BodyErr != nil {
			t.Errorf("%s: reading the body: %v", tc.name, g.BodyErr)
		}
		if g.RemoteAddr != local {
			t.Errorf("%s: RemoteAddr %q, want the client's %q", tc.name, g.RemoteAddr, local)
		}
		if g.TLS {
			t.Errorf("%s: r.TLS set on a plain connection", tc.name)
		}
		if i == 0 {
			if v := g.Header["X-Multi"]; len(v) != 2 || v[0] != "1" || v[1] != "2" {
				t.Errorf("X-Multi = %q, want [1 2] in order", v)
			}
			if v := g.Header["User-Agent"]; len(v) != 1 || v[0] != "t" {
				t.Errorf("User-Agent = %q: keys must be canonical", v)
			}
		}
		h := g.Header
		g.RemoteAddr, g.Header, g.BodyErr = "", nil, nil
		if fmt.Sprint(g) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v (header %v)", tc.name, g, tc.want, h)
		}
	}
}

func TestServerPipelining(t *testing.T) {
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
	sc := dialSuite(t, s.addr)
	sc.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody" +
		"HEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /4 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
	for _, want := range []struct{ method, body string }{
		{"GET", "GET /1 "}, {"POST", "POST /2 body"}, {"HEAD", ""}, {"POST", "POST /4 ok"},
	} {
		resp, body := sc.response(want.method)
		if resp.StatusCode != 200 || body != want.body {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want.body)
		}
	}
}

func TestServerChunkedBodyWithExtensionsAndTrailers(t *testing.T) {
	type result struct {
		body, trailer string
		err           error
	}
	got := make(chan result, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- result{string(b), r.Trailer.Get("X-Sum"), err}
	})
	sc := dialSuite(t, s.addr)
	sc.send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
		"5;ext=1\r\nhello\r\n6;a=\"b\";c\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
	if resp, _ := sc.response("POST"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := waitFor(t, got, "the handler")
	if r.err != nil || r.body != "hello world" || r.trailer != "42" {
		t.Errorf("got body %q trailer %q err %v, want \"hello world\", \"42\", nil", r.body, r.trailer, r.err)
	}
}

// An unread request body is never parsed as the next request: the server
// either discards it and reads the next request, or closes the connection.
func TestServerUnreadBody(t *testing.T) {
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	chunk := strconv.FormatInt(int64(len(smuggled)), 16)
	cases := []struct{ name, req string }{
		{"content-length", "POST /skip HTTP/1.1\r\nHost: h\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"chunked", "POST /skip HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + "\r\n" + smuggled + "\r\n0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			paths := make(chan string, 4)
			s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) { paths <- r.URL.Path })
			sc := dialSuite(t, s.addr)
			sc.send(tc.req + "GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp, _ := sc.response("POST"); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if _, _, err := sc.tryResponse("GET"); err == nil {
				if p := waitFor(t, paths, "the second request"); p != "/skip" {
					t.Fatalf("first request seen as %q", p)
				}
				if p := waitFor(t, paths, "the second request"); p != "/next" {
					t.Fatalf("second request seen as %q, want /next", p)
				}
			}
			if n := s.calls.Load(); n > 2 {
				t.Errorf("%d requests reached the handler", n)
			}
		})
	}
}

// A handler that reads part of a large body still gets its response to the
// client, and the rest of the body (full of request lines) never becomes
// requests.
func TestServerLargeBodyPartlyRead(t *testing.T) {
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	body := strings.Repeat(smuggled, (1<<20)/len(smuggled))
	paths := make(chan string, 8)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		n, _ := io.ReadFull(r.Body, make([]byte, 10))
		w.Header().Set("Content-Length", "2")
		_, _ = fmt.Fprint(w, n)
	})
	sc := dialSuite(t, s.addr)
	go func() {
		_ = sc.c.SetWriteDeadline(time.Now().Add(waitBound))
		_, _ = io.WriteString(sc.c, "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body+
			"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
	}()
	resp, got := sc.response("POST")
	if resp.StatusCode != 200 || got != "10" {
		t.Fatalf("got %d %q, want 200 \"10\"", resp.StatusCode, got)
	}
	_, _, _ = sc.tryResponse("GET") // a response to /next or a closed connection
	close(paths)
	for p := range paths {
		if p != "/big" && p != "/next" {
			t.Errorf("the body reached the handler as a request for %q", p)
		}
	}
}

func TestServerExpectContinue(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		entered <- struct{}{}
		<-release
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})

	t.Run("sent when the handler reads", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		waitFor(t, entered, "the handler")
		sc.expectOpen(150 * time.Millisecond) // no 100 before the handler reads
		release <- struct{}{}
		resp, _ := sc.response("POST")
		if resp.StatusCode != 100 || resp.Proto != "HTTP/1.1" {
			t.Fatalf("got %s %d, want HTTP/1.1 100", resp.Proto, resp.StatusCode)
		}
		sc.send("hello")
		if resp, body := sc.response("POST"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("got %d %q, want 200 hello", resp.StatusCode, body)
		}
	})
	t.Run("not sent when the handler answers without reading", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("POST /refuse HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		if resp, _ := sc.response("POST"); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %d, want the final 403 first", resp.StatusCode)
		}
	})
	t.Run("never over HTTP/1.0", func(t *testing.T) {
		sc := dialSuite(t, s.addr)
		sc.send("POST / HTTP/1.0\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
		waitFor(t, entered, "the handler")
		release <- struct{}{}
		if resp, body := sc.response("POST"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("got %d %q, want 200 hello and no 100", resp.StatusCode, body)
		}
	})
}

func TestServerResponseFraming(t *testing.T) {
	big := strings.Repeat("z", 1<<20)
	cases := []struct {
		name, method string
		h            http.HandlerFunc
		status       int
		body         string
		length       int64 // resp.ContentLength; -1 for chunked
		chunked      bool
	}{
		{"small body gets a Content-Length", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello")
		}, 200, "hello", 5, false},
		{"flushed early is chunked", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hel")
			_ = http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, "lo")
		}, 200, "hello", -1, true},
		{"large body without length is chunked", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, big)
		}, 200, big, -1, true},
		{"handler's Content-Length honoured", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			_ = http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, "abc")
		}, 200, "abc", 3, false},
		{"HEAD keeps the handler's Content-Length, sends no body", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
		}, 200, "", 10, false},
		{"HEAD drops what the handler writes", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "not sent")
		}, 200, "", -2, false},
		{"204 has no body", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			_, _ = io.WriteString(w, "not sent")
		}, 204, "", 0, false},
		{"304 has no body", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
			_, _ = io.WriteString(w, "not sent")
		}, 304, "", -2, false},
		{"first WriteHeader wins", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, "x")
		}, 201, "x", -2, false},
		{"Write without WriteHeader is 200, no Content-Type needed", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			_, _ = w.Write([]byte{0, 1, 2})
		}, 200, "\x00\x01\x02", -2, false},
		{"nothing written is an empty 200", "GET", func(w http.ResponseWriter, r *http.Request) {}, 200, "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/next" {
					_, _ = io.WriteString(w, "next")
					return
				}
				tc.h(w, r)
			})
			sc := dialSuite(t, s.addr)
			// The second request proves the first response was framed
			// exactly: a byte too many or too few breaks its parsing.
			sc.send(tc.method + " / HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
			resp, body := sc.response(tc.method)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Errorf("got %d %.20q (%d bytes), want %d %.20q", resp.StatusCode, body, len(body), tc.status, tc.body)
			}
			if tc.length != -2 && resp.ContentLength != tc.length {
				t.Errorf("ContentLength %d, want %d", resp.ContentLength, tc.length)
			}
			if chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"; chunked != tc.chunked {
				t.Errorf("TransferEncoding %q, want chunked=%v", resp.TransferEncoding, tc.chunked)
			}
			if resp, body := sc.response("GET"); resp.StatusCode != 200 || body != "next" {
				t.Errorf("next response: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// A 1xx response goes out at once, with the headers set before it, ahead
// of the final response.
func TestServerInformationalResponse(t *testing.T) {
	release := make(chan struct{})
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		<-release
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "final")
	})
	defer close(release)
	sc := dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, _ := sc.response("GET")
	if resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") != "</style.css>; rel=preload" {
		t.Fatalf("got %d %v, want 103 with Link while the handler runs", resp.StatusCode, resp.Header)
	}
	release <- struct{}{}
	if resp, body := sc.response("GET"); resp.StatusCode != 200 || body != "final" {
		t.Fatalf("got %d %q, want 200 final", resp.StatusCode, body)
	}
}

// Not pinned: prefixed trailers set after a write that is still buffered
// when the handler returns. net/http then sends Content-Length and drops
// them (httputil.ReverseProxy flushes to force chunking for that reason).
func TestServerResponseTrailers(t *testing.T) {
	cases := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"declared", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-T", "v")
		}},
		{"prefix after a flush", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "bo")
			_ = http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, "dy")
			w.Header().Set(http.TrailerPrefix+"X-T", "v")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := serveHandler(t, tc.h)
			sc := dialSuite(t, s.addr)
			sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
			resp, body := sc.response("GET")
			if resp.StatusCode != 200 || body != "body" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if resp.ContentLength != -1 || resp.Trailer.Get("X-T") != "v" {
				t.Errorf("ContentLength %d, trailer %v, want chunked with X-T: v", resp.ContentLength, resp.Trailer)
			}
			if resp.Header.Get("X-T") != "" {
				t.Errorf("the trailer leaked into the header: %v", resp.Header)
			}
		})
	}
}
