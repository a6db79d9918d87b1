package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/proxy/h1"
)

// ioTimeout bounds every wait in these tests, so that a broken behaviour
// fails its test instead of hanging the whole run.
const ioTimeout = 5 * time.Second

var discardLog = slog.New(slog.DiscardHandler)

// parseConfig validates a TOML configuration after replacing each ${name}
// with vars[name], which is how tests put httptest URLs into it.
func parseConfig(t testing.TB, text string, vars map[string]string) *config.Config {
	t.Helper()
	expanded := os.Expand(text, func(name string) string {
		v, ok := vars[name]
		if !ok {
			t.Fatalf("config placeholder ${%s} has no value", name)
		}
		return v
	})
	cfg, err := config.Parse([]byte(expanded), "test.toml")
	if err != nil {
		t.Fatalf("invalid test config:\n%s\n%v", expanded, err)
	}
	return cfg
}

// testProxy is a running proxy built from a test configuration.
type testProxy struct {
	URL  string // http://127.0.0.1:port
	Addr string // 127.0.0.1:port, for raw connections
	Snap *Snapshot
}

// startProxy serves the configuration through the server NewServer builds, so
// that the configured client limits (header size, timeouts) are in force.
// The server and the snapshot's idle backend connections are closed when the
// test ends.
func startProxy(t testing.TB, text string, vars map[string]string) *testProxy {
	t.Helper()
	return startProxyLog(t, text, vars, discardLog)
}

// startProxyLog is startProxy with the proxy logging to log.
func startProxyLog(t testing.TB, text string, vars map[string]string, log *slog.Logger) *testProxy {
	t.Helper()
	cfg := parseConfig(t, text, vars)
	snap, err := NewSnapshot(cfg, log)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	t.Cleanup(snap.Close)
	srv, err := NewServer(&cfg.Server, NewHandler(snap), log)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	addr := serveFront(t, srv, listenLoopback(t))
	return &testProxy{URL: "http://" + addr, Addr: addr, Snap: snap}
}

// serveFront serves srv's settings on ln with Portico's HTTP/1 server, as
// the listeners do, until the test ends, and returns the address.
func serveFront(t testing.TB, srv *http.Server, ln net.Listener) string {
	t.Helper()
	s := h1.NewServer(srv)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		<-served
	})
	return ln.Addr().String()
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveProxy serves cfg through NewServer on a new loopback listener, for
// tests that need the server or the listener themselves: prepare, if not
// nil, may set the server's hooks and returns the listener to serve. The
// server and idle backend connections close when the test ends. It returns
// the snapshot and the address.
func serveProxy(t testing.TB, cfg *config.Config, log *slog.Logger, prepare func(*http.Server, net.Listener) net.Listener) (*Snapshot, string) {
	t.Helper()
	snap, err := NewSnapshot(cfg, log)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	t.Cleanup(snap.Close)
	srv, err := NewServer(&cfg.Server, NewHandler(snap), log)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln := listenLoopback(t)
	if prepare != nil {
		ln = prepare(srv, ln)
	}
	return snap, serveFront(t, srv, ln)
}

// poolConfig is a configuration with one pool, "p", of the given backends,
// to which every request is routed. poolOpts are further keys of the pool
// table, such as "retries = 0".
func poolConfig(poolOpts string, urls ...string) string {
	var b strings.Builder
	b.WriteString("[pools.p]\nbackends = [")
	for i, u := range urls {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{ url = %q }", u)
	}
	b.WriteString("]\n")
	b.WriteString(poolOpts)
	b.WriteString("\n\n[[routes]]\npool = \"p\"\n")
	return b.String()
}

// startPool starts a proxy with poolConfig(poolOpts, urls...).
func startPool(t testing.TB, poolOpts string, urls ...string) *testProxy {
	t.Helper()
	return startProxy(t, poolConfig(poolOpts, urls...), nil)
}

// backend is a loopback backend that counts what reaches it.
type backend struct {
	*httptest.Server
	hits  atomic.Int64 // requests that reached the handler
	conns atomic.Int64 // TCP connections accepted
}

func startBackend(t testing.TB, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// textHandler answers every request with body.
func textHandler(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, body)
	}
}

// echoHandler answers with the method and the request body it received.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = io.WriteString(w, r.Method+"\n")
	_, _ = w.Write(body)
}

// dropConnection reads the whole request and closes the connection without
// answering, as a backend that crashes mid-request does.
func dropConnection(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_ = conn.Close()
}

// stall never answers; it returns when the proxy gives up on the request.
func stall(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(ioTimeout):
	}
}

// closedURL is the URL of a loopback port where connections are refused
// for the rest of the test: a socket is bound to it but never listens, so
// no other test or process can take the port in the meantime (a port merely
// closed again could be handed to someone else's listener).
func closedURL(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// newClient is a client that never goes through an environment proxy; its
// idle connections are closed when the test ends.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// newRequest is a request whose context ends after ioTimeout.
func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req and reads the whole response body.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return res, string(body)
}

// get is do for a GET with the given Host header ("" for the URL's).
func get(t *testing.T, c *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req := newRequest(t, http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	return do(t, c, req)
}

// dialRaw opens a TCP connection for requests an http.Client would refuse to
// send or would rewrite. Reads and writes on it fail after ioTimeout.
func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	t.Cleanup(func() { _ = conn.Close() })
	return conn, bufio.NewReader(conn)
}

func writeRaw(t *testing.T, conn net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(conn, s); err != nil {
		t.Fatalf("writing to %s: %v", conn.RemoteAddr(), err)
	}
}

// rawRoundTrip writes request verbatim on a new connection and reads one
// response and its body.
func rawRoundTrip(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	conn, br := dialRaw(t, addr)
	writeRaw(t, conn, request)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return res, string(body)
}

// waitNoInFlight waits until no backend of snap counts a request in flight.
// It polls because there is nothing to wait on: the count is released inside
// the proxy, possibly after the client already has its whole answer.
func waitNoInFlight(t *testing.T, snap *Snapshot) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var busy []string
		for _, p := range snap.Pools() {
			for _, b := range p.Backends() {
				if n := b.InFlight(); n != 0 {
					busy = append(busy, fmt.Sprintf("%s/%s=%d", p.Name(), b.URL().Host, n))
				}
			}
		}
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends still count requests in flight 2s after they finished: %s", strings.Join(busy, " "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasToken reports whether a comma-separated header has token, ignoring case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// wireMessage is a request or response as read off the wire: header names
// canonicalised, but nothing removed or merged the way net/http would, and
// the body decoded from its framing.
type wireMessage struct {
	StartLine string
	Header    textproto.MIMEHeader
	Body      string
}

// readWireMessage reads one message. A body is framed by chunked encoding,
// Content-Length, or (untilEOF, for responses) the end of the connection.
func readWireMessage(br *bufio.Reader, untilEOF bool) (wireMessage, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return wireMessage{}, err
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return wireMessage{}, fmt.Errorf("header of %q: %w", line, err)
	}
	m := wireMessage{StartLine: line, Header: hdr}
	var body []byte
	switch te, cl := hdr.Values("Transfer-Encoding"), hdr.Get("Content-Length"); {
	case len(te) > 0:
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return m, fmt.Errorf("unexpected Transfer-Encoding %q", te)
		}
		if body, err = io.ReadAll(httputil.NewChunkedReader(br)); err != nil {
			return m, err
		}
		// The last chunk is followed by a trailer section, maybe empty.
		if _, err := tp.ReadMIMEHeader(); err != nil {
			return m, fmt.Errorf("trailer: %w", err)
		}
	case cl != "":
		n, err := strconv.Atoi(cl)
		if err != nil {
			return m, fmt.Errorf("bad Content-Length %q", cl)
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return m, err
		}
	case untilEOF:
		if body, err = io.ReadAll(br); err != nil {
			return m, err
		}
	}
	m.Body = string(body)
	return m, nil
}

// startWireBackend is a backend that shows a test exactly what the proxy put
// on the wire, which an http.Server would normalise: it sends every request
// it reads to the returned channel and answers each with response verbatim.
func startWireBackend(t *testing.T, response string) (string, <-chan wireMessage) {
	t.Helper()
	reqs := make(chan wireMessage, 16)
	rs := serveRaw(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		for {
			m, err := readWireMessage(br, false)
			if err != nil {
				return
			}
			select {
			case reqs <- m:
			default: // nobody is looking at this many
			}
			if _, err := io.WriteString(c, response); err != nil {
				return
			}
		}
	})
	return rs.URL, reqs
}

// serveRaw runs a backend that speaks raw TCP, for what an http.Server would
// not do: serve is called for each connection with its number (1 for the
// first) and the connection is closed when it returns. Listener and
// connections close when the test ends.
func serveRaw(t testing.TB, serve func(c net.Conn, id int)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &rawServer{URL: "http://" + ln.Addr().String(), conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for id := 1; ; id++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Registered in accept order: see quiesce.
			rs.mu.Lock()
			if rs.closed {
				rs.mu.Unlock()
				_ = c.Close()
				return
			}
			rs.conns[c] = true
			rs.mu.Unlock()
			wg.Go(func() {
				defer func() {
					_ = c.Close()
					rs.mu.Lock()
					delete(rs.conns, c)
					rs.mu.Unlock()
				}()
				serve(c, id)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		rs.mu.Lock()
		rs.closed = true
		for c := range rs.conns {
			_ = c.Close()
		}
		rs.mu.Unlock()
		wg.Wait()
	})
	return rs
}

// rawBackend is serveRaw with a count of the connections it accepted and a
// buffered reader for serve, which must answer within 2×ioTimeout.
type rawBackend struct {
	URL   string
	conns atomic.Int64
}

func startRawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *rawBackend {
	t.Helper()
	rb := &rawBackend{}
	rb.URL = serveRaw(t, func(c net.Conn, _ int) {
		rb.conns.Add(1)
		_ = c.SetDeadline(time.Now().Add(2 * ioTimeout))
		serve(c, bufio.NewReader(c))
	}).URL
	return rb
}

type rawServer struct {
	URL string

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool // open, by accept order of registration
}

// quiesce returns once every connection made to the server before it was
// called has been served to its end: it connects itself, waits until that
// connection is accepted (connections are accepted in the order they were
// made), closes it, and waits until no connection is open. What the server
// recorded is then complete.
func (rs *rawServer) quiesce(t testing.TB) {
	t.Helper()
	probe, err := net.DialTimeout("tcp", strings.TrimPrefix(rs.URL, "http://"), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	accepted := func() bool {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		for c := range rs.conns {
			if c.RemoteAddr().String() == probe.LocalAddr().String() {
				return true
			}
		}
		return false
	}
	waitFor(t, "the raw server to accept its probe", accepted)
	_ = probe.Close()
	waitFor(t, "the raw server's connections to end", func() bool {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return len(rs.conns) == 0
	})
}
