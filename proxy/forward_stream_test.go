package proxy

import (
	"bufio"
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

// gatedBackend answers with first, flushed, and then with second only once
// release is called: the response cannot end before the client has first.
func gatedBackend(t *testing.T, header http.Header, first, second string) (url string, release func()) {
	gate := make(chan struct{})
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release)
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		_, _ = io.WriteString(w, first)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, second)
	})
	return b.URL, release
}

func TestResponseIsStreamed(t *testing.T) {
	url, releaseOnce := gatedBackend(t, nil, "first\n", "second\n")
	p := startPool(t, "", url)

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
	url, releaseOnce := gatedBackend(t, http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
		"event: greeting\ndata: one\n\n", "data: two\n\n")
	p := startPool(t, "", url)

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
