package proxy

import (
	"bufio"
	"bytes"
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

func TestHopByHopHeadersRemoved(t *testing.T) {
	cases := []struct {
		name string
		// Header lines and framing of the client's request and of the
		// backend's response; both always carry X-End-To-End, which must pass.
		request, response string
		// Headers that must not cross the proxy in each direction.
		dropToBackend, dropToClient []string
		// The client gets the proxy's own "Connection: close" (after a
		// chunked request, see front.go) and no other Connection header.
		closes bool
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
			dropToClient:  []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade"},
			closes:        true,
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
			if got := res.Header["Connection"]; tc.closes && (len(got) != 1 || got[0] != "close") {
				t.Errorf("client received Connection %q, want only the proxy's own [close]", got)
			}
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

func TestResponseIsStreamed(t *testing.T) {
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	})
	p := startPool(t, "", b.URL)

	// The backend cannot finish until the client has the first chunk, so a
	// proxy that buffered the response would run into the request deadline.
	res, err := newClient(t).Do(newRequest(t, http.MethodGet, p.URL+"/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q, %v; want it while the backend is still responding", line, err)
	}
	releaseOnce()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "second\n" {
		t.Fatalf("rest of the body: %q, %v", rest, err)
	}
}

func TestRequestBodyIsStreamed(t *testing.T) {
	const first, second = "first part;", "second part"
	gotFirst := make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, len(first))
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		close(gotFirst)
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(append(buf, rest...))
	})
	p := startPool(t, "", b.URL)

	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.CloseWithError(errors.New("test over")) })
	req := newRequest(t, http.MethodPost, p.URL+"/upload", pr)
	c := newClient(t)
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		done <- result{res.StatusCode, string(body), err}
	}()

	if _, err := io.WriteString(pw, first); err != nil {
		t.Fatal(err)
	}
	// The rest of the body is held back until the backend has the first part.
	select {
	case <-gotFirst:
	case r := <-done:
		t.Fatalf("request ended before the body was complete: %+v", r)
	case <-time.After(ioTimeout):
		t.Fatal("backend did not receive the first part of the body while the client held back the rest")
	}
	if _, err := io.WriteString(pw, second); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	r := <-done
	if r.err != nil || r.status != http.StatusOK || r.body != first+second {
		t.Fatalf("got %d %q, %v; want 200 %q", r.status, r.body, r.err, first+second)
	}
}

func TestServerSentEventsAreNotBuffered(t *testing.T) {
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = io.WriteString(w, "event: greeting\ndata: one\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	})
	p := startPool(t, "", b.URL)

	res, err := newClient(t).Do(newRequest(t, http.MethodGet, p.URL+"/events", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(res.Body)
	readEvent := func() string {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading event after %q: %v", ev.String(), err)
			}
			if line == "\n" {
				return ev.String()
			}
			ev.WriteString(line)
		}
	}
	// The request deadline fails this if the event waits for the stream's end.
	if ev := readEvent(); ev != "event: greeting\ndata: one\n" {
		t.Fatalf("first event %q", ev)
	}
	releaseOnce()
	if ev := readEvent(); ev != "data: two\n" {
		t.Fatalf("second event %q", ev)
	}
}

// upgradeEcho is a backend that switches to "websocket" when asked and then
// echoes every byte until the connection closes.
func upgradeEcho(w http.ResponseWriter, r *http.Request) {
	if !hasToken(r.Header["Connection"], "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	_, _ = io.Copy(conn, brw.Reader)
}

const upgradeRequest = "GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

// startUpgrade sends upgradeRequest on a new connection to addr and reads
// the 101 answer.
func startUpgrade(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, br := dialRaw(t, addr)
	writeRaw(t, conn, upgradeRequest)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading upgrade response: %v", err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("upgrade answered %d %q, want 101", res.StatusCode, body)
	}
	if !hasToken(res.Header["Connection"], "upgrade") || res.Header.Get("Upgrade") != "websocket" {
		t.Errorf("101 without Connection: Upgrade and Upgrade: websocket: %v", res.Header)
	}
	return conn, br
}

func TestUpgradeProxiedBothWays(t *testing.T) {
	b := startBackend(t, upgradeEcho)
	p := startPool(t, "", b.URL)

	conn, br := startUpgrade(t, p.Addr)
	for _, msg := range []string{"hello", "a second, longer message\x00\xff"} {
		writeRaw(t, conn, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("reading echo of %q: %v", msg, err)
		}
		if string(got) != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
	_ = conn.Close()
	waitNoInFlight(t, p.Snap)
}

func TestUpgradeHalfClosePropagates(t *testing.T) {
	// A client that is done sending half-closes its side and still expects
	// the backend's answer to what it sent.
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(ioTimeout))
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		_ = brw.Flush()
		got, _ := io.ReadAll(brw.Reader) // until the client's half-close arrives
		_, _ = io.WriteString(conn, "got: "+string(got))
	})
	p := startPool(t, "", b.URL)

	conn, br := startUpgrade(t, p.Addr)
	writeRaw(t, conn, "ping")
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(br)
	if string(answer) != "got: ping" {
		t.Errorf("after the client half-closed an upgraded connection it read %q (%v), want %q: "+
			"the half-close must reach the backend, not tear the tunnel down", answer, err, "got: ping")
	}
	waitNoInFlight(t, p.Snap)
}

func TestUpgradeRefusedByBackendReleasesBackend(t *testing.T) {
	// The backend switches, but not to the protocol the client asked for:
	// the proxy must refuse the switch and count the request as finished.
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(ioTimeout))
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other-protocol\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(io.Discard, brw.Reader)
	})
	p := startPool(t, "", b.URL)

	res, body := rawRoundTrip(t, p.Addr, upgradeRequest)
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("got %d %q, want 502", res.StatusCode, body)
	}
	if n := p.Snap.Pools()[0].Backends()[0].InFlight(); n != 0 {
		// The answer above was written by the handler, so nothing is left to
		// release the count later.
		t.Errorf("backend still counts %d request in flight after a refused 101", n)
	}
}

func TestTrailersReachClient(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		_, _ = io.WriteString(w, "payload")
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set(http.TrailerPrefix+"X-Unannounced", "late")
	})
	p := startPool(t, "", b.URL)

	res, body := get(t, newClient(t), p.URL+"/trailers", "")
	if res.StatusCode != http.StatusOK || body != "payload" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	for name, want := range map[string]string{"X-Checksum": "abc123", "X-Unannounced": "late"} {
		if got := res.Trailer.Get(name); got != want {
			t.Errorf("trailer %s = %q, want %q (trailers: %v)", name, got, want, res.Trailer)
		}
	}
}

func TestExpectContinue(t *testing.T) {
	b := startBackend(t, echoHandler)
	p := startPool(t, "", b.URL)

	const body = "hello world"
	conn, br := dialRaw(t, p.Addr)
	writeRaw(t, conn, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: upload.test\r\n"+
		"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body)))
	// The body is withheld until the proxy says to go on, as a client that
	// would rather not upload to a server that refuses it does.
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("waiting for 100 Continue: %v", err)
	}
	if res.StatusCode != http.StatusContinue {
		t.Fatalf("got %d before sending the body, want 100", res.StatusCode)
	}
	writeRaw(t, conn, body)
	for res.StatusCode == http.StatusContinue {
		if res, err = http.ReadResponse(br, nil); err != nil {
			t.Fatalf("reading final response: %v", err)
		}
	}
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || string(got) != "POST\n"+body {
		t.Fatalf("got %d %q, want 200 echoing the body", res.StatusCode, got)
	}
}

func TestClientGoneCancelsBackendRequest(t *testing.T) {
	cases := []struct {
		name string
		// Whether the backend has sent headers and part of the body when
		// the client goes away.
		headersSent bool
	}{
		{"before the response", false},
		{"during the response body", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			started, gone := make(chan struct{}), make(chan struct{})
			b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.headersSent {
					_, _ = io.WriteString(w, "partial")
					_ = http.NewResponseController(w).Flush()
				}
				close(started)
				select {
				case <-r.Context().Done():
					close(gone)
				case <-time.After(ioTimeout):
				}
			})
			p := startPool(t, "", b.URL)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/slow", nil)
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(t)
			clientDone := make(chan struct{})
			go func() {
				defer close(clientDone)
				if res, err := c.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					_ = res.Body.Close()
				}
			}()
			select {
			case <-started:
			case <-time.After(ioTimeout):
				t.Fatal("request never reached the backend")
			}
			cancel()
			select {
			case <-gone:
			case <-time.After(2 * time.Second):
				t.Fatal("backend request not cancelled within 2s of the client going away")
			}
			<-clientDone
			waitNoInFlight(t, p.Snap)
		})
	}
}

func TestErrorResponses(t *testing.T) {
	cases := []struct {
		name     string
		backend  func(t *testing.T) string // URL of the only backend
		poolOpts string
		prepare  func(*Snapshot)
		want     int
	}{
		{
			name:    "dial failure",
			backend: closedURL,
			want:    http.StatusBadGateway,
		},
		{
			name:    "connection lost before the response",
			backend: func(t *testing.T) string { return startBackend(t, dropConnection).URL },
			want:    http.StatusBadGateway,
		},
		{
			name:     "response header timeout",
			backend:  func(t *testing.T) string { return startBackend(t, stall).URL },
			poolOpts: `response_header_timeout = "200ms"`,
			want:     http.StatusGatewayTimeout,
		},
		{
			name:    "no usable backend",
			backend: func(t *testing.T) string { return startBackend(t, textHandler("ok")).URL },
			prepare: func(s *Snapshot) {
				for _, b := range s.Pools()[0].Backends() {
					b.SetUsable(false)
				}
			},
			want: http.StatusServiceUnavailable,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startPool(t, tc.poolOpts, tc.backend(t))
			if tc.prepare != nil {
				tc.prepare(p.Snap)
			}
			res, body := get(t, newClient(t), p.URL+"/x", "")
			if res.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", res.StatusCode, body, tc.want)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			// The cause, with internal addresses, is for the log only.
			if len(body) > 64 {
				t.Errorf("body is %d bytes, want a short status text: %q", len(body), body)
			}
			for _, leak := range []string{"127.0.0.1", "dial", "refused", "tcp", "EOF", "awaiting", "net/http", "backend"} {
				if strings.Contains(body, leak) {
					t.Errorf("body %q reveals the cause (%q)", body, leak)
				}
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

func TestBackendConnectionsAreReused(t *testing.T) {
	const clients, requests = 64, 20
	b := startBackend(t, textHandler("ok"))
	p := startPool(t, "", b.URL)
	c := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range requests {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/", nil)
				if err != nil {
					t.Error(err)
					return
				}
				res, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				if res.StatusCode != http.StatusOK {
					t.Errorf("status %d", res.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	if hits := b.hits.Load(); hits != clients*requests {
		t.Fatalf("backend served %d requests, want %d", hits, clients*requests)
	}
	// One connection per concurrent request, plus a few that the transport
	// dials while a finished request's connection is on its way back to the
	// idle pool; without reuse this would be one per request.
	if n := b.conns.Load(); n > clients+clients/4 {
		t.Errorf("%d requests, %d at a time, opened %d backend connections; want about %d", clients*requests, clients, n, clients)
	}
}

func TestRetriesAfterDialFailure(t *testing.T) {
	good := startBackend(t, textHandler("ok"))
	p := startPool(t, "retries = 2", closedURL(t), good.URL)
	c := newClient(t)
	// Round robin sends every other request to the closed port first.
	for i := range 20 {
		if res, body := get(t, c, p.URL+"/", ""); res.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("request %d: got %d %q, want 200 from the good backend", i, res.StatusCode, body)
		}
	}
	if n := good.hits.Load(); n != 20 {
		t.Errorf("good backend served %d requests, want 20", n)
	}
}

func TestRetryRules(t *testing.T) {
	// A fresh round-robin pool picks its first backend first, so every case
	// starts on the failing one; the second backend echoes what it gets.
	type failure struct {
		start    func(t *testing.T) (string, *backend) // backend is nil if unreachable
		poolOpts string                                // needed for the failure to happen
	}
	closed := failure{start: func(t *testing.T) (string, *backend) { return closedURL(t), nil }}
	drops := failure{start: func(t *testing.T) (string, *backend) { b := startBackend(t, dropConnection); return b.URL, b }}
	stalls := failure{
		start:    func(t *testing.T) (string, *backend) { b := startBackend(t, stall); return b.URL, b },
		poolOpts: `response_header_timeout = "200ms"`,
	}

	bigBody := make([]byte, 256<<10)
	for i := range bigBody {
		bigBody[i] = byte(i % 251) // a shifted or truncated copy would not match
	}
	cases := []struct {
		name      string
		first     failure
		retries   int
		method    string
		body      []byte
		want      int
		firstHits int64 // checked when the first backend is reachable
		nextHits  int64
	}{
		{"dial failure, GET", closed, 2, http.MethodGet, nil, http.StatusOK, 0, 1},
		{"dial failure, POST with body", closed, 2, http.MethodPost, bigBody, http.StatusOK, 0, 1},
		{"dial failure, retries = 0", closed, 0, http.MethodGet, nil, http.StatusBadGateway, 0, 0},
		{"connection lost, GET", drops, 2, http.MethodGet, nil, http.StatusOK, 1, 1},
		{"connection lost, DELETE", drops, 1, http.MethodDelete, nil, http.StatusOK, 1, 1},
		{"connection lost, POST with body", drops, 2, http.MethodPost, []byte("order=1"), http.StatusBadGateway, 1, 0},
		{"connection lost, POST without body", drops, 2, http.MethodPost, nil, http.StatusBadGateway, 1, 0},
		{"connection lost, PUT with body", drops, 2, http.MethodPut, []byte("v=1"), http.StatusBadGateway, 1, 0},
		{"connection lost, GET, retries = 0", drops, 0, http.MethodGet, nil, http.StatusBadGateway, 1, 0},
		{"response header timeout, GET", stalls, 2, http.MethodGet, nil, http.StatusGatewayTimeout, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			firstURL, first := tc.first.start(t)
			next := startBackend(t, echoHandler)
			p := startPool(t, fmt.Sprintf("retries = %d\n%s", tc.retries, tc.first.poolOpts), firstURL, next.URL)

			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			res, got := do(t, newClient(t), newRequest(t, tc.method, p.URL+"/r", body))
			if res.StatusCode != tc.want {
				t.Fatalf("got %d %.40q, want %d", res.StatusCode, got, tc.want)
			}
			if tc.want == http.StatusOK && got != tc.method+"\n"+string(tc.body) {
				t.Errorf("second backend received a different body (%d bytes echoed, %d sent)", len(got)-len(tc.method)-1, len(tc.body))
			}
			if first != nil && first.hits.Load() != tc.firstHits {
				t.Errorf("first backend saw the request %d times, want %d", first.hits.Load(), tc.firstHits)
			}
			if n := next.hits.Load(); n != tc.nextHits {
				t.Errorf("second backend saw the request %d times, want %d", n, tc.nextHits)
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

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
