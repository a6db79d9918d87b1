package metrics

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portico/portico/internal/testcert"
)

// serveTracked serves srv on a loopback listener tracked as listener name,
// under TLS when tc is set, and returns its address.
func serveTracked(t *testing.T, m *Metrics, name string, srv *http.Server, tc *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = m.TrackConns(name, srv, ln)
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func fetch(t *testing.T, c *http.Client, url string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// waitFor polls until the series has the value, for counts that change
// when a connection closes on the server's side.
func waitFor(t *testing.T, m *Metrics, want float64, family string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := value(t, m, family, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", family, labels, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })

func TestConnectionsByProtocol(t *testing.T) {
	m := New("test")

	plain := &http.Server{Handler: ok, ReadHeaderTimeout: time.Second}
	plain.Protocols = new(http.Protocols)
	plain.Protocols.SetHTTP1(true)
	plain.Protocols.SetUnencryptedHTTP2(true)
	if err := http2.ConfigureServer(plain, &http2.Server{}); err != nil {
		t.Fatal(err)
	}
	addr := serveTracked(t, m, "http", plain, nil)

	h1 := &http.Client{Transport: &http.Transport{}}
	fetch(t, h1, "http://"+addr+"/")
	fetch(t, h1, "http://"+addr+"/") // same connection
	waitFor(t, m, 1, "portico_connections_open", "listener", "http", "protocol", "h1")
	waitFor(t, m, 1, "portico_connections_total", "listener", "http", "protocol", "h1")

	h2cTransport := &http.Transport{Protocols: new(http.Protocols)}
	h2cTransport.Protocols.SetUnencryptedHTTP2(true)
	fetch(t, &http.Client{Transport: h2cTransport}, "http://"+addr+"/")
	waitFor(t, m, 1, "portico_connections_open", "listener", "http", "protocol", "h2")

	h1.CloseIdleConnections()
	h2cTransport.CloseIdleConnections()
	waitFor(t, m, 0, "portico_connections_open", "listener", "http", "protocol", "h1")
	waitFor(t, m, 0, "portico_connections_open", "listener", "http", "protocol", "h2")
	waitFor(t, m, 1, "portico_connections_total", "listener", "http", "protocol", "h2")
	if got := value(t, m, "portico_tls_handshakes_total", "result", "ok"); got != 0 {
		t.Errorf("handshakes on a plain listener = %v", got)
	}
}

func TestTLSConnectionsAndHandshakes(t *testing.T) {
	m := New("test")
	ca := testcert.NewCA(t)
	pair := ca.Valid(t, "example.com")
	srv := &http.Server{Handler: ok, ReadHeaderTimeout: time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair.TLS}, NextProtos: []string{"h2", "http/1.1"}}}
	if err := http2.ConfigureServer(srv, &http2.Server{}); err != nil {
		t.Fatal(err)
	}
	addr := serveTracked(t, m, "https", srv, srv.TLSConfig)

	clientTLS := func(protos ...string) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool(), ServerName: "example.com", NextProtos: protos}
	}
	h2 := &http.Transport{TLSClientConfig: clientTLS("h2"), ForceAttemptHTTP2: true}
	fetch(t, &http.Client{Transport: h2}, "https://"+addr+"/")
	h1 := &http.Transport{TLSClientConfig: clientTLS("http/1.1")}
	fetch(t, &http.Client{Transport: h1}, "https://"+addr+"/")
	waitFor(t, m, 1, "portico_connections_open", "listener", "https", "protocol", "h2")
	waitFor(t, m, 1, "portico_connections_open", "listener", "https", "protocol", "h1")

	// A client that does not trust the certificate, and one that speaks
	// plain HTTP to the TLS port, both fail their handshakes.
	if _, err := (&http.Client{Transport: &http.Transport{}}).Get("https://" + addr + "/"); err == nil {
		t.Fatal("an untrusting client got through")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	waitFor(t, m, 2, "portico_tls_handshakes_total", "result", "failed")
	waitFor(t, m, 2, "portico_tls_handshakes_total", "result", "ok")

	h2.CloseIdleConnections()
	h1.CloseIdleConnections()
	waitFor(t, m, 0, "portico_connections_open", "listener", "https", "protocol", "h2")
	waitFor(t, m, 0, "portico_connections_open", "listener", "https", "protocol", "h1")
}

// A hijacked connection (a WebSocket tunnel) stays open until it closes.
func TestHijackedConnectionCountsUntilClosed(t *testing.T) {
	m := New("test")
	release := make(chan struct{})
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		<-release
		if cw, ok := c.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
			t.Error("the hijacked connection cannot half-close")
		}
		c.Close()
	})}
	addr := serveTracked(t, m, "http", srv, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, 1, "portico_connections_open", "listener", "http", "protocol", "h1")
	close(release)
	waitFor(t, m, 0, "portico_connections_open", "listener", "http", "protocol", "h1")
}
