package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptedBackend answers each request with the raw response its path names
// and records which connection each request came on, so that a test can
// tell whether the proxy reused a connection after a bad response.
type scriptedBackend struct {
	URL string

	mu   sync.Mutex
	seen map[string][]int // path -> connection numbers it arrived on
}

// rawResponse is what scriptedBackend writes for a path; hangUp closes the
// connection after it.
type rawResponse struct {
	text   string
	hangUp bool
}

func startScriptedBackend(t *testing.T, script map[string]rawResponse) *scriptedBackend {
	t.Helper()
	sb := &scriptedBackend{seen: map[string][]int{}}
	sb.URL = serveRaw(t, func(c net.Conn, id int) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			sb.mu.Lock()
			sb.seen[req.URL.Path] = append(sb.seen[req.URL.Path], id)
			sb.mu.Unlock()
			r, ok := script[req.URL.Path]
			if !ok {
				r = rawResponse{text: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}
			}
			if _, err := io.WriteString(c, r.text); err != nil || r.hangUp {
				return
			}
		}
	}).URL
	return sb
}

// connsOf returns the connections path arrived on.
func (sb *scriptedBackend) connsOf(path string) []int {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return append([]int(nil), sb.seen[path]...)
}

// backendFramingCase is a bad backend response and what the client may see.
type backendFramingCase struct {
	name     string
	response rawResponse
	// truncated: the headers may already be on their way, so the client
	// gets a 502 or a response that ends early; otherwise exactly a 502.
	truncated bool
}

// runBackendFraming sends GET /bad through a proxy in front of a backend
// answering tc.response, then GET /ok: the client must not get the bad
// response as if it were whole, and the backend connection that sent it
// must not be used again.
func runBackendFraming(t *testing.T, poolOpts string, cases []backendFramingCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sb := startScriptedBackend(t, map[string]rawResponse{"/bad": tc.response})
			p := startPool(t, "retries = 0\n"+poolOpts, sb.URL)

			conn, br := dialRaw(t, p.Addr)
			writeRaw(t, conn, "GET /bad HTTP/1.1\r\nHost: h.test\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			switch {
			case err != nil && !tc.truncated:
				t.Fatalf("no response (%v), want 502", err)
			case err == nil && res.StatusCode == http.StatusBadGateway:
			case err == nil && !tc.truncated:
				t.Errorf("status %d, want 502", res.StatusCode)
			case err == nil:
				if body, err := io.ReadAll(res.Body); err == nil {
					t.Errorf("client got a whole %d response %q from a broken one", res.StatusCode, body)
				}
			}

			res2, body := get(t, newClient(t), p.URL+"/ok", "")
			if res2.StatusCode != http.StatusOK || body != "ok" {
				t.Errorf("next request: %d %q, want 200 ok", res2.StatusCode, body)
			}
			bad, ok := sb.connsOf("/bad"), sb.connsOf("/ok")
			if len(bad) != 1 || len(ok) != 1 || bad[0] == ok[0] {
				t.Errorf("/bad came on connection %v, /ok on %v: want one each, on different connections", bad, ok)
			}
		})
	}
}

func TestBadBackendFraming(t *testing.T) {
	runBackendFraming(t, "", []backendFramingCase{
		// http.Transport framed this by Transfer-Encoding, dropped the
		// Content-Length and reused the connection; Portico's client refuses
		// it (RFC 9112 §6.1 lets a proxy do either, and closing is the one
		// that another hop cannot read differently).
		{name: "Content-Length and Transfer-Encoding",
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}},
		{name: "two different Content-Length values",
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok"}},
		{name: "Transfer-Encoding other than chunked",
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"}},
		{name: "bad chunk size", truncated: true,
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"}},
		{name: "chunk size over 64 bits", truncated: true,
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n"}},
		{name: "closes before the end of its Content-Length", truncated: true,
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", hangUp: true}},
		{name: "closes in the middle of a chunked body", truncated: true,
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", hangUp: true}},
	})
}

// max_response_header_bytes bounds what a backend may send as headers.
func TestMaxResponseHeaderBytes(t *testing.T) {
	big := func(n int) rawResponse {
		return rawResponse{text: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", n) + "\r\nContent-Length: 2\r\n\r\nok"}
	}
	runBackendFraming(t, "max_response_header_bytes = 2048", []backendFramingCase{
		{name: "header block over the limit", response: big(4096)},
	})
	// Within it, the same response passes.
	sb := startScriptedBackend(t, map[string]rawResponse{"/big": big(1024)})
	p := startPool(t, "max_response_header_bytes = 2048", sb.URL)
	if res, body := get(t, newClient(t), p.URL+"/big", ""); res.StatusCode != http.StatusOK || len(res.Header.Get("X-Big")) != 1024 {
		t.Errorf("response within the limit: %d %q", res.StatusCode, body)
	}
	// The default, 64 KiB, applies without the key.
	sb = startScriptedBackend(t, map[string]rawResponse{"/big": big(70 << 10)})
	p = startPool(t, "", sb.URL)
	if res, _ := get(t, newClient(t), p.URL+"/big", ""); res.StatusCode != http.StatusBadGateway {
		t.Errorf("70 KiB of response header with the default limit: %d, want 502", res.StatusCode)
	}
}

// A backend that answers before reading the request body, or closes the
// connection while reading it: the client gets the answer or a 502, and
// since its body was not read to the end, its connection is closed (the
// rest of the body is small enough that net/http would otherwise read it
// and keep the connection).
func TestBackendAbandonsRequestBody(t *testing.T) {
	cases := []struct {
		name string
		// handler calls done once it has answered or closed.
		handler func(w http.ResponseWriter, r *http.Request, done func())
		status  int
	}{
		{"answers first", func(w http.ResponseWriter, r *http.Request, done func()) {
			// Full duplex, or net/http would read the body before answering;
			// then read on, as net/http's own read after a full-duplex
			// handler races the next request's.
			rc := http.NewResponseController(w)
			_ = rc.EnableFullDuplex()
			w.WriteHeader(http.StatusForbidden)
			_ = rc.Flush()
			done()
			_, _ = io.Copy(io.Discard, r.Body)
		}, http.StatusForbidden},
		{"closes mid-body", func(w http.ResponseWriter, r *http.Request, done func()) {
			_, _ = io.CopyN(io.Discard, r.Body, 10)
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
			}
			done()
		}, http.StatusBadGateway},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			handled := make(chan struct{})
			b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
				tc.handler(w, r, func() { close(handled) })
			})
			p := startPool(t, "retries = 0", b.URL)
			conn, br := dialRaw(t, p.Addr)
			const size = 100 << 10
			writeRaw(t, conn, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: h.test\r\nContent-Length: %d\r\n\r\n0123456789", size))
			<-handled
			time.Sleep(20 * time.Millisecond) // for the proxy to see the backend's answer or close
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = conn.Write(make([]byte, size-10)) })
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			if res.StatusCode != tc.status || !res.Close {
				t.Errorf("got %d, Connection %q: want %d and the connection closed", res.StatusCode, res.Header["Connection"], tc.status)
			}
			if _, err := io.Copy(io.Discard, br); err != nil {
				t.Errorf("connection not closed after the response: %v", err)
			}
			_ = conn.Close()
			wg.Wait()
			waitNoInFlight(t, p.Snap)
		})
	}
}

// A backend that answers, or fails, before the client has sent its whole
// body, while the client waits for an answer before it sends more (as a
// client that streams what it produces does): the answer, or the 502,
// reaches the client at once, not when the client sends its next bytes or
// client_body_timeout (60s by default) passes.
func TestAnswerIsNotHeldForTheRestOfTheBody(t *testing.T) {
	backends := []struct {
		name, response string
		status         int
		body           string
	}{
		{"backend answers early", "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden", http.StatusForbidden, "forbidden"},
		{"backend fails", "garbage\r\n\r\n", http.StatusBadGateway, "bad gateway\n"},
	}
	framings := []struct{ name, head string }{
		{"Content-Length", fmt.Sprintf("Content-Length: %d\r\n\r\n0123456789", 4*smallBody)},
		{"chunked", "Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"},
	}
	for _, be := range backends {
		for _, fr := range framings {
			t.Run(be.name+", "+fr.name, func(t *testing.T) {
				p := startPool(t, "retries = 0", answeringBackend(t, be.response))
				conn, br := dialRaw(t, p.Addr)
				writeRaw(t, conn, "POST /upload HTTP/1.1\r\nHost: h.test\r\n"+fr.head)
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer within 2s while the client waits with its body unfinished: %v", err)
				}
				body, err := io.ReadAll(res.Body)
				if res.StatusCode != be.status || string(body) != be.body || err != nil {
					t.Errorf("got %d %q (%v), want %d %q", res.StatusCode, body, err, be.status, be.body)
				}
				if !res.Close {
					t.Error("the client connection stays open although its body was not read to its end")
				}
				waitNoInFlight(t, p.Snap)
			})
		}
		t.Run(be.name+", HTTP/2 client", func(t *testing.T) {
			p := startProxy(t, "[server]\nh2c = true\n"+poolConfig("retries = 0", answeringBackend(t, be.response)), nil)
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			t.Cleanup(tr.CloseIdleConnections)
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = pw.Write([]byte("0123456789")) }() // and no more
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/upload", pr)
			res, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("no answer within 2s while the client waits with its body unfinished: %v", err)
			}
			body, err := io.ReadAll(res.Body)
			if res.StatusCode != be.status || string(body) != be.body || err != nil {
				t.Errorf("got %d %q (%v), want %d %q", res.StatusCode, body, err, be.status, be.body)
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

// answeringBackend writes response once it has read a request's head, and
// reads on without answering anything else.
func answeringBackend(t *testing.T, response string) string {
	return startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, response)
		_, _ = io.Copy(io.Discard, br)
	}).URL
}
