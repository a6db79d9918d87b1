package proxy

import (
	"bufio"
	"context"
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

	"golang.org/x/net/http2"

	"github.com/portico/portico/internal/testcert"
)

// named answers with its name and the request body it read.
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", name, body)
	})
}

func listen(t *testing.T) *Listener {
	t.Helper()
	l, err := Listen("127.0.0.1:0", discardLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// serveGen starts a generation of a plain server answering as name.
func serveGen(t *testing.T, l *Listener, name string) (g, prev *Generation) {
	t.Helper()
	g, prev = l.Serve(&http.Server{Handler: named(name), ReadHeaderTimeout: ioTimeout}, nil)
	t.Cleanup(func() { _ = g.Close() })
	return g, prev
}

// A new generation on the same socket takes the new connections; a
// keep-alive client finishes its next request on the old one, told to
// close, and moves over without an error.
func TestGenerationTakesOverTheSocket(t *testing.T) {
	l := listen(t)
	serveGen(t, l, "one")
	url := "http://" + l.Addr().String() + "/"
	c := newClient(t)
	if _, body := get(t, c, url, ""); body != "one " {
		t.Fatalf("first generation answered %q", body)
	}

	_, prev := serveGen(t, l, "two")
	prev.Retire()
	res, body := get(t, c, url, "")
	if body != "one " || !res.Close {
		t.Errorf("keep-alive request after the swap: %q, Connection: close %v; want the old generation, closing", body, res.Close)
	}
	if _, body := get(t, c, url, ""); body != "two " {
		t.Errorf("next request: %q, want the new generation", body)
	}
	if res, body := rawRoundTrip(t, l.Addr().String(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); body != "two " || res.Close {
		t.Errorf("new connection: %q (close %v), want the new generation, kept alive", body, res.Close)
	}
}

// Swapping generations under load, keep-alive and new connections, GETs
// and POSTs, fails no request.
func TestGenerationSwapsUnderLoadFailNothing(t *testing.T) {
	l := listen(t)
	serveGen(t, l, "g0")
	url := "http://" + l.Addr().String() + "/"
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			tr := &http.Transport{Proxy: nil, DisableKeepAlives: i%2 == 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: ioTimeout}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var res *http.Response
				var err error
				if n%2 == 0 {
					res, err = c.Get(url)
				} else {
					res, err = c.Post(url, "text/plain", strings.NewReader("body"))
				}
				if err == nil {
					_, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	// Each generation serves some requests before the next replaces it,
	// however slow a busy machine makes them.
	served := func(what string) {
		from := ok.Load() + failed.Load()
		waitCond(t, what, func() bool { return ok.Load()+failed.Load() >= from+5 })
	}
	for i := 1; i <= 20; i++ {
		served(fmt.Sprintf("requests before swap %d", i))
		_, prev := serveGen(t, l, fmt.Sprintf("g%d", i))
		prev.Retire()
	}
	served("requests after the last swap")
	close(stop)
	wg.Wait()
	t.Logf("%d requests across 20 generation swaps, %d failed", ok.Load()+failed.Load(), failed.Load())
	if failed.Load() != 0 || ok.Load() < 100 {
		t.Errorf("%d failed (first: %v), %d succeeded; want none failed", failed.Load(), firstErr.Load(), ok.Load())
	}
}

// A retired generation sends HTTP/2 clients GOAWAY after their next
// response; the stream in flight completes.
func TestRetiredGenerationSendsGoAway(t *testing.T) {
	ca := testcert.NewCA(t)
	l := listen(t)
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				close(arrived)
				<-release
			}
			_, _ = io.WriteString(w, r.Proto)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Valid(t, "front.test").TLS}},
	}
	if err := http2.ConfigureServer(srv, nil); err != nil {
		t.Fatal(err)
	}
	g, _ := l.Serve(srv, nil)
	t.Cleanup(func() { _ = g.Close() })

	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "front.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc, err := (&http2.Transport{}).NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func(path string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://front.test"+path, nil)
		res, err := cc.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	slow := make(chan string, 1)
	go func() {
		body, err := roundTrip("/slow")
		slow <- fmt.Sprintf("%s %v", body, err)
	}()
	if body, err := roundTrip("/"); body != "HTTP/2.0" || err != nil {
		t.Fatalf("before retiring: %q %v", body, err)
	}
	<-arrived // in flight when the generation retires, not sent after GOAWAY

	g.Retire()
	if body, err := roundTrip("/"); body != "HTTP/2.0" || err != nil {
		t.Fatalf("first request after retiring: %q %v, want an answer", body, err)
	}
	deadline := time.Now().Add(ioTimeout)
	for cc.CanTakeNewRequest() {
		if time.Now().After(deadline) {
			t.Fatal("no GOAWAY from the retired generation")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if got := <-slow; got != "HTTP/2.0 <nil>" {
		t.Errorf("stream in flight during GOAWAY: %q, want it answered", got)
	}
}

// Closing a listener serves the connections the kernel had already
// accepted instead of resetting them.
func TestListenerCloseServesQueuedConnections(t *testing.T) {
	l := listen(t)
	const n = 20
	var conns []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", l.Addr().String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		writeRaw(t, c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		conns = append(conns, c)
	}
	// Nothing was accepted yet: they wait in the backlog.
	serveGen(t, l, "last")
	l.Close()
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after Close")
	}
	for i, c := range conns {
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d queued at close: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		if string(body) != "last " {
			t.Errorf("connection %d: %q", i, body)
		}
		c.Close()
	}
}

// An upgraded connection outlives its generation's retirement and shutdown.
func TestUpgradedConnectionOutlivesItsGeneration(t *testing.T) {
	l := listen(t)
	g, _ := l.Serve(&http.Server{Handler: http.HandlerFunc(upgradeEcho), ReadHeaderTimeout: ioTimeout}, nil)
	conn, br := startUpgrade(t, l.Addr().String())
	g.Retire()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	writeRaw(t, conn, "still here")
	got := make([]byte, len("still here"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "still here" {
		t.Errorf("echo after shutdown: %q %v", got, err)
	}
}

// A plain listener with h2c on serves HTTP/1.1 and prior-knowledge HTTP/2
// through a Generation. x/net's ConfigureServer gives every server a
// TLSConfig; a generation that took it for a TLS one would wrap the plain
// socket in TLS and answer nothing right.
func TestH2CGenerationIsPlain(t *testing.T) {
	l := listen(t)
	cfg := parseConfig(t, "[server]\nh2c = true\n"+poolConfig("", "http://127.0.0.1:1"), nil)
	srv, err := NewServer(&cfg.Server, named("h2c"), discardLog)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := l.Serve(srv, nil)
	t.Cleanup(func() { _ = g.Close() })
	url := "http://" + l.Addr().String() + "/"

	h2 := &http.Client{Timeout: ioTimeout, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	for name, c := range map[string]*http.Client{"HTTP/1.1": {Timeout: ioTimeout}, "HTTP/2 prior knowledge": h2} {
		res, err := c.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "h2c " {
			t.Errorf("%s: %d %q, want 200 %q", name, res.StatusCode, body, "h2c ")
		}
	}
}
