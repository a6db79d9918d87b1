package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testcert"
)

// front is Portico's request path behind a real listener.
type front struct {
	addr   string
	roots  *x509.CertPool // verifies the HTTPS front's certificate for "front.test"
	conns  atomic.Int64   // TCP connections accepted
	writes atomic.Int64   // writes to their sockets
}

// startFront parses doc (pools and routes; [server] keys go in server),
// and serves it over TLS, or over cleartext with h2c when tlsOn is false.
func startFront(t *testing.T, server, doc string, tlsOn bool) *front {
	t.Helper()
	cfg, err := config.Parse([]byte("[server]\n"+server+"\n"+doc), "test.toml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	snap, err := NewSnapshot(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	f := &front{}
	var srv *http.Server
	if tlsOn {
		ca := testcert.NewCA(t)
		f.roots = ca.Pool()
		tc := &tls.Config{Certificates: []tls.Certificate{ca.Valid(t, "front.test").TLS}}
		srv, err = NewTLSServer(&cfg.Server, NewHandler(snap), tc, slog.New(slog.DiscardHandler))
	} else {
		srv, err = NewServer(&cfg.Server, NewHandler(snap), slog.New(slog.DiscardHandler))
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	var ln net.Listener = &countingListener{Listener: listenLoopback(t), writes: &f.writes}
	if tlsOn {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	f.addr = serveFront(t, srv, ln)
	return f
}

// h2Client speaks HTTP/2 only, to the front whatever the URL's host: over
// TLS, or with prior knowledge to a cleartext front.
func (f *front) h2Client() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http2.Transport{
		AllowHTTP:       f.roots == nil,
		TLSClientConfig: &tls.Config{RootCAs: f.roots, ServerName: "front.test"},
		DialTLSContext: func(_ context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
			if f.roots == nil {
				return net.Dial(network, f.addr)
			}
			return tls.Dial(network, f.addr, cfg)
		},
	}}
}

func poolDoc(urls ...string) string {
	var bs []string
	for _, u := range urls {
		bs = append(bs, fmt.Sprintf("{ url = %q }", u))
	}
	return "[pools.app]\nbackends = [" + strings.Join(bs, ", ") + "]\n"
}

const anyRoute = "[[routes]]\npool = \"app\"\n"

// startBarrierBackend answers with the request's path once n requests to
// paths other than /warm are in: they are all in flight together. A
// request that never arrives fails the test instead of hanging it.
func startBarrierBackend(t *testing.T, n int) string {
	t.Helper()
	var arrived sync.WaitGroup
	arrived.Add(n)
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/warm" {
			arrived.Done()
			select {
			case <-release:
			case <-time.After(ioTimeout):
			}
		}
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	t.Cleanup(be.Close)
	go func() { arrived.Wait(); close(release) }()
	return be.URL
}

func TestHTTP2HundredConcurrentStreamsShareOneConnection(t *testing.T) {
	const n = 100
	beURL := startBarrierBackend(t, n)

	f := startFront(t, "", poolDoc(beURL)+"max_idle_conns_per_backend = 128\n"+anyRoute, true)
	client := f.h2Client()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := client.Get(fmt.Sprintf("https://front.test/s%d", i))
			if err != nil {
				errs <- err
				return
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.ProtoMajor != 2 || string(body) != fmt.Sprintf("/s%d", i) {
				errs <- fmt.Errorf("stream %d: %s %q", i, res.Proto, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c := f.conns.Load(); c != 1 {
		t.Errorf("%d TCP connections for %d concurrent streams, want 1", c, n)
	}
}

func TestRedirect(t *testing.T) {
	for _, tc := range []struct {
		name, port, method, target, host, want string
	}{
		{"default port, path and query kept", "443", "GET", "/a/b?x=1&y=%20", "example.com", "https://example.com/a/b?x=1&y=%20"},
		{"request port replaced", "443", "GET", "/", "example.com:80", "https://example.com/"},
		{"https port other than 443 added", "8443", "HEAD", "/p", "example.com:8080", "https://example.com:8443/p"},
		{"POST keeps its method with 308", "443", "POST", "/form", "example.com", "https://example.com/form"},
		{"IPv6 literal", "443", "GET", "/", "[::1]:80", "https://[::1]/"},
		{"IPv6 literal with port", "8443", "GET", "/", "[::1]", "https://[::1]:8443/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			Redirect(tc.port).ServeHTTP(rec, req)
			if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != tc.want {
				t.Errorf("got %d %q, want 308 %q", rec.Code, rec.Header().Get("Location"), tc.want)
			}
		})
	}
}

// writePEM writes a certificate as PEM and returns the file.
func writePEM(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tlsBackend answers with the protocol the request arrived in.
func tlsBackend(t *testing.T, h2 bool) *httptest.Server {
	t.Helper()
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	be.EnableHTTP2 = h2
	be.StartTLS()
	t.Cleanup(be.Close)
	return be
}

func TestHTTPSBackends(t *testing.T) {
	h2 := tlsBackend(t, true)
	h1 := tlsBackend(t, false)
	h2CA := writePEM(t, h2.Certificate())
	h1CA := writePEM(t, h1.Certificate())
	for _, tc := range []struct {
		name, backend, pool string
		status              int
		body                string
	}{
		{"HTTP/2 when the backend offers it", h2.URL, fmt.Sprintf("tls_ca_file = %q\n", h2CA), 200, "HTTP/2.0"},
		{"HTTP/1.1 when it does not", h1.URL, fmt.Sprintf("tls_ca_file = %q\n", h1CA), 200, "HTTP/1.1"},
		{"tls_server_name checked against the certificate", h2.URL, fmt.Sprintf("tls_ca_file = %q\ntls_server_name = %q\n", h2CA, "example.com"), 200, "HTTP/2.0"},
		{"wrong tls_server_name fails with 502", h2.URL, fmt.Sprintf("tls_ca_file = %q\ntls_server_name = %q\n", h2CA, "other.test"), 502, "bad gateway\n"},
		{"untrusted certificate fails with 502", h2.URL, "", 502, "bad gateway\n"},
		{"tls_insecure_skip_verify accepts it", h2.URL, "tls_insecure_skip_verify = true\n", 200, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFront(t, "", poolDoc(tc.backend)+tc.pool+anyRoute, false)
			res, err := http.Get("http://" + f.addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status || string(body) != tc.body {
				t.Errorf("got %d %q, want %d %q", res.StatusCode, body, tc.status, tc.body)
			}
		})
	}
}

func TestWebSocketUpgradeToHTTPSBackendUsesHTTP1(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 || r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an HTTP/1.1 upgrade, got "+r.Proto, http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		_ = brw.Flush()
		line, _ := brw.ReadString('\n')
		_, _ = brw.WriteString("echo " + line)
		_ = brw.Flush()
	}))
	be.EnableHTTP2 = true // the backend offers h2; the upgrade must not take it
	be.StartTLS()
	defer be.Close()

	f := startFront(t, "", poolDoc(be.URL)+"tls_insecure_skip_verify = true\n"+anyRoute, false)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d %q, want 101", res.StatusCode, body)
	}
	fmt.Fprint(c, "hello\n")
	if line, _ := br.ReadString('\n'); line != "echo hello\n" {
		t.Errorf("through the upgraded connection: %q", line)
	}
}

// A backend that fails the TLS handshake never saw the request, so even a
// POST with a body moves on to the next backend.
func TestTLSHandshakeFailureIsRetriedOnAnotherBackend(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the plain backend got a request")
	}))
	defer plain.Close()
	good := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	good.StartTLS()
	defer good.Close()

	doc := poolDoc("https://"+plain.Listener.Addr().String(), good.URL) + "tls_insecure_skip_verify = true\nretries = 1\n" + anyRoute
	f := startFront(t, "", doc, false)
	for range 2 { // round robin: one of the two requests goes to the plain backend first
		res, err := http.Post("http://"+f.addr+"/", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "payload" {
			t.Errorf("got %d %q, want the good backend's echo", res.StatusCode, body)
		}
	}
}
