package proxy

// The HTTP/1.1 backend client (package h1) as a proxy user meets it: raw
// backends that close idle connections, answer early, send malformed or
// unusual responses, and a concurrent load under the race detector.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// readRequest reads one request with its body from a raw backend connection.
func readRequest(br *bufio.Reader) (*http.Request, error) {
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, r.Body)
	return r, err
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestBackendClosingIdleConnections(t *testing.T) {
	cases := []struct {
		name string
		// How long the backend keeps a connection after a response.
		idle time.Duration
		// Time between the client's requests.
		gap time.Duration
	}{
		// Noticed by the idle check before the connection is reused.
		{"closed well before reuse", 20 * time.Millisecond, 250 * time.Millisecond},
		// Closed as soon as the response is out, and reused at once: the
		// request meets a dead connection and goes out again on a new one.
		{"closed just before reuse", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var served sync.Map // method -> count
			rb := startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
				r, err := readRequest(br)
				if err != nil {
					return
				}
				n, _ := served.LoadOrStore(r.Method, new(int))
				*n.(*int)++
				_, _ = io.WriteString(c, okResponse)
				time.Sleep(tc.idle) // then close, without having said so
			})
			// One failure would eject the only backend: a stale connection
			// must not count as one.
			p := startPool(t, "retries = 0\n[pools.p.passive]\nmax_fails = 1", rb.URL)
			c := newClient(t)
			for i, method := range []string{"GET", "GET", "HEAD", "DELETE", "GET"} {
				time.Sleep(tc.gap)
				res, body := do(t, c, newRequest(t, method, p.URL+"/", nil))
				if res.StatusCode != http.StatusOK || method != "HEAD" && body != "ok" {
					t.Fatalf("request %d (%s): got %d %q, want 200", i, method, res.StatusCode, body)
				}
			}
			if n := rb.conns.Load(); n != 5 {
				t.Errorf("backend accepted %d connections for 5 requests, want 5", n)
			}
			if s := p.Snap.Pools()[0].Backends()[0].State(); s.Ejections != 0 {
				t.Errorf("the backend was ejected %d times for closing idle connections", s.Ejections)
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

func TestBackendAnswersBeforeReadingBody(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 4<<20) // far more than socket buffers hold
	cases := []struct {
		name    string
		backend func(t *testing.T) string
		want    int
		text    string
	}{
		{
			name: "raw backend answers 413 and closes",
			backend: func(t *testing.T) string {
				return startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large")
				}).URL
			},
			want: http.StatusRequestEntityTooLarge, text: "too large",
		},
		{
			// net/http reads up to 256 KiB of an unread body, then closes.
			name: "net/http backend answers without reading",
			backend: func(t *testing.T) string {
				return startBackend(t, func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusAccepted)
					_, _ = io.WriteString(w, "queued")
				}).URL
			},
			want: http.StatusAccepted, text: "queued",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startPool(t, "retries = 0", tc.backend(t))
			res, got := do(t, newClient(t), newRequest(t, http.MethodPost, p.URL+"/upload", bytes.NewReader(body)))
			if res.StatusCode != tc.want || got != tc.text {
				t.Errorf("got %d %q, want the backend's %d %q", res.StatusCode, got, tc.want, tc.text)
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

func TestMalformedBackendResponses(t *testing.T) {
	big := strings.Repeat("b", 70<<10)
	cases := []struct {
		name, response string
		// headersSent: the head is fine and the body breaks, so the client
		// has its status already and sees the connection break instead.
		headersSent bool
		thenClose   bool // the backend closes the connection after it
	}{
		{name: "both Transfer-Encoding and Content-Length", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{name: "differing Content-Lengths", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{name: "invalid Content-Length", response: "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"},
		{name: "unsupported Transfer-Encoding", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{name: "header block over 64 KiB", response: "HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\nContent-Length: 2\r\n\r\nok"},
		{name: "space before colon", response: "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{name: "obsolete line folding", response: "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"},
		{name: "garbage status line", response: "HTTP/1.1 OK 200\r\nContent-Length: 2\r\n\r\nok"},
		{name: "101 not asked for", response: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{name: "too many 1xx", response: strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", 6) + okResponse},
		{name: "bad chunk size", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", headersSent: true},
		{name: "chunk data longer than its size", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", headersSent: true},
		{name: "body shorter than Content-Length, then close", response: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", headersSent: true, thenClose: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rb := startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
				for {
					r, err := readRequest(br)
					if err != nil {
						return
					}
					answer := okResponse
					if r.URL.Path == "/bad" {
						answer = tc.response
					}
					if _, err := io.WriteString(c, answer); err != nil || answer == tc.response && tc.thenClose {
						return
					}
				}
			})
			p := startPool(t, "retries = 0", rb.URL)
			res, body, err := rawGet(t, p.Addr, "/bad")
			switch {
			case tc.headersSent:
				if err == nil {
					t.Errorf("client read a whole %d %q from a broken body; want the connection cut", res.StatusCode, body)
				}
			case err != nil || res.StatusCode != http.StatusBadGateway:
				t.Errorf("got %v %q (%v), want 502", res, body, err)
			}
			if res, body, err := rawGet(t, p.Addr, "/good"); err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("next request: %v %q %v", res, body, err)
			}
			if n := rb.conns.Load(); n != 2 {
				t.Errorf("backend connections: %d, want 2: the one with the malformed response must not be reused", n)
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

// rawGet sends a GET on a new connection and reads the response as
// net/http's client would, reporting a body that breaks as an error.
func rawGet(t *testing.T, addr, path string) (*http.Response, string, error) {
	t.Helper()
	conn, br := dialRaw(t, addr)
	writeRaw(t, conn, "GET "+path+" HTTP/1.1\r\nHost: raw.test\r\n\r\n")
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, "", err
		}
		if res.StatusCode >= 200 {
			body, err := io.ReadAll(res.Body)
			return res, string(body), err
		}
	}
}

// earlyHintsBackend answers each request with a 103 and then a 200 "ok".
func earlyHintsBackend(t *testing.T) string {
	return startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}).URL
}

func TestInterimResponsesRelayed(t *testing.T) {
	p := startPool(t, "", earlyHintsBackend(t))
	conn, br := dialRaw(t, p.Addr)
	writeRaw(t, conn, "GET / HTTP/1.1\r\nHost: hints.test\r\n\r\n")
	hints, err := http.ReadResponse(br, nil)
	if err != nil || hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") != "</app.css>; rel=preload" {
		t.Fatalf("first response %v, %v; want 103 with the Link header", hints, err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("final response %v, %v", res, err)
	}
	if l := res.Header.Get("Link"); l != "" {
		t.Errorf("the 103's Link header leaked into the final response: %q", l)
	}
}

// An HTTP/1.0 client knows no interim responses (RFC 9110 §15.2: a server
// must not send it one): it would take the 103 for its answer and the real
// one for garbage after it.
func TestInterimResponsesNotSentToHTTP10Clients(t *testing.T) {
	p := startPool(t, "", earlyHintsBackend(t))
	res, body := rawRoundTrip(t, p.Addr, "GET / HTTP/1.0\r\nHost: hints.test\r\n\r\n")
	if res.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("HTTP/1.0 client's first response: %d %q, want the final 200 \"ok\"", res.StatusCode, body)
	}
}

func TestBackendBodyFramings(t *testing.T) {
	large := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	cases := []struct {
		name, response, want string
		trailer              map[string]string
	}{
		{name: "until close", response: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + large, want: large},
		{name: "chunked, extensions, trailers",
			response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 42\r\nX-Late: yes\r\n\r\n",
			want: "wikipedia", trailer: map[string]string{"X-Sum": "42", "X-Late": "yes"}},
		{name: "large Content-Length", response: fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(large), large), want: large},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rb := startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err == nil {
					_, _ = io.WriteString(c, tc.response)
				}
			})
			p := startPool(t, "", rb.URL)
			res, body := get(t, newClient(t), p.URL+"/", "")
			if res.StatusCode != http.StatusOK || body != tc.want {
				t.Fatalf("got %d, %d bytes; want 200, %d bytes", res.StatusCode, len(body), len(tc.want))
			}
			for k, v := range tc.trailer {
				if got := res.Trailer.Get(k); got != v {
					t.Errorf("trailer %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestConcurrentLoad mixes every kind of request body, many at a time, in
// front of a backend that closes some connections, and checks every
// response; run with -race, it is the transport's concurrency check.
func TestConcurrentLoad(t *testing.T) {
	var n sync.Mutex
	count := 0
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n.Lock()
		count++
		closeIt := count%7 == 0
		n.Unlock()
		if closeIt {
			w.Header().Set("Connection", "close")
		}
		h := sha256.New()
		m, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%s %d %x", r.Method, m, h.Sum(nil))
	})
	b2 := startBackend(t, b.Config.Handler.ServeHTTP)
	p := startPool(t, "", b.URL, b2.URL)
	c := newClient(t)
	bodies := map[string]func() io.Reader{
		"none":     func() io.Reader { return nil },
		"small":    func() io.Reader { return strings.NewReader("small body") },
		"streamed": func() io.Reader { return bytes.NewReader(bytes.Repeat([]byte("s"), 200<<10)) },
		"chunked":  func() io.Reader { return io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body")) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 25 {
				kind := []string{"none", "small", "streamed", "chunked"}[(g+i)%4]
				method := http.MethodPost
				if kind == "none" {
					method = http.MethodGet
				}
				body := bodies[kind]()
				var want bytes.Buffer
				h := sha256.New()
				if body != nil {
					body = io.TeeReader(body, &want)
				}
				req, _ := http.NewRequestWithContext(ctx, method, p.URL+"/load", body)
				if kind == "chunked" {
					req.ContentLength = -1
				}
				res, err := c.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", method, kind, err)
					return
				}
				got, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				h.Write(want.Bytes())
				if exp := fmt.Sprintf("%s %d %x", method, want.Len(), h.Sum(nil)); res.StatusCode != 200 || string(got) != exp {
					t.Errorf("%s %s: got %d %q, want %q", method, kind, res.StatusCode, got, exp)
					return
				}
			}
		})
	}
	wg.Wait()
	waitNoInFlight(t, p.Snap)
}

// A chunked request's trailers reach an HTTP/1.1 backend, as its body does.
func TestRequestTrailersReachBackend(t *testing.T) {
	got := make(chan http.Header, 1)
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Trailer
		_, _ = w.Write(body)
	})
	p := startPool(t, "", b.URL)
	conn, br := dialRaw(t, p.Addr)
	writeRaw(t, conn, "POST /up HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "hello" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if tr := <-got; tr.Get("X-Sum") != "42" {
		t.Errorf("backend received trailers %v, want X-Sum: 42", tr)
	}
}

// A request head and a small body leave in one write: the backend's first
// read has both (one write on loopback arrives as one segment).
func TestSmallRequestSentInOneWrite(t *testing.T) {
	first := make(chan string, 1)
	rb := startRawBackend(t, func(c net.Conn, br *bufio.Reader) {
		buf := make([]byte, 64<<10)
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		first <- string(buf[:n])
		_, _ = io.WriteString(c, okResponse)
	})
	p := startPool(t, "", rb.URL)
	res, body := do(t, newClient(t), newRequest(t, http.MethodPost, p.URL+"/form", strings.NewReader("name=value&x=1")))
	if res.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if got := <-first; !strings.HasPrefix(got, "POST /form HTTP/1.1\r\n") || !strings.HasSuffix(got, "\r\n\r\nname=value&x=1") {
		t.Errorf("backend's first read: %q; want the whole request, head and body", got)
	}
}

// A backend connection carries no read deadline from one exchange to the
// next: a request whose body streams (no deadline is set until the body is
// sent) on a connection reused after response_header_timeout has passed
// since its last exchange still gets its answer, whatever that exchange's
// response was (no body, or a body that had arrived with its head).
func TestReusedConnectionCarriesNoStaleDeadline(t *testing.T) {
	for _, first := range []int{http.StatusNoContent, http.StatusOK} {
		t.Run(http.StatusText(first), func(t *testing.T) {
			b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body)
				if r.Method == http.MethodGet {
					w.WriteHeader(first)
					if first == http.StatusOK {
						_, _ = io.WriteString(w, "small")
					}
					return
				}
				fmt.Fprintf(w, "got %d", n)
			})
			p := startPool(t, "retries = 0\nresponse_header_timeout = \"200ms\"", b.URL)
			c := newClient(t)
			if res, _ := get(t, c, p.URL+"/", ""); res.StatusCode != first {
				t.Fatalf("first request: %d", res.StatusCode)
			}
			time.Sleep(400 * time.Millisecond) // past the first exchange's deadline
			// A body the client streams: larger than what is read before
			// the backend is chosen, of unknown length.
			body := io.MultiReader(strings.NewReader(strings.Repeat("x", 64<<10)))
			res, got := do(t, c, newRequest(t, http.MethodPost, p.URL+"/upload", body))
			if res.StatusCode != http.StatusOK || got != "got 65536" {
				t.Errorf("streamed POST on the reused connection: %d %q", res.StatusCode, got)
			}
			if n := b.conns.Load(); n != 1 {
				t.Errorf("backend saw %d connections, want 1 (reused)", n)
			}
		})
	}
}

// response_header_timeout bounds every exchange on a busy connection, also
// one that keeps the deadline an exchange just before it set: never less
// than the timeout, at most a quarter more.
func TestResponseHeaderTimeoutOnReusedConnection(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			stall(w, r)
			return
		}
		_, _ = io.WriteString(w, "fast")
	})
	p := startPool(t, "retries = 0\nresponse_header_timeout = \"400ms\"", b.URL)
	c := newClient(t)
	if res, _ := get(t, c, p.URL+"/fast", ""); res.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d", res.StatusCode)
	}
	start := time.Now()
	res, _ := get(t, c, p.URL+"/stall", "")
	took := time.Since(start)
	if res.StatusCode != http.StatusGatewayTimeout || took < 400*time.Millisecond || took > 900*time.Millisecond {
		t.Errorf("stalled backend: %d after %v, want 504 after 400ms to 500ms (plus scheduling)", res.StatusCode, took)
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections, want 1 (reused)", n)
	}
}
