package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The raw-socket request smuggling suite. Each probe carries a second,
// embedded request that a server reading the first one's framing
// differently would execute. Portico stands in front of a lenient backend,
// the kind smuggling exploits, which records every request line it reads:
// no embedded request may ever reach it, and every probe must get a 4xx or
// a closed connection.

// smuggled is the embedded request; its path must never reach a backend.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n"

// lenientBackend frames a request by Content-Length even when
// Transfer-Encoding is present too, accepts bare LF, rejects nothing, and
// answers every request 200. It records every request line it reads, and
// whether the request's body arrived whole.
type lenientBackend struct {
	URL string
	raw *rawServer

	mu     sync.Mutex
	seen   []seenRequest
	closed map[int]bool // connections that ended
}

type seenRequest struct {
	line     string
	header   []string // the header lines as written
	conn     int      // 1 for the first connection accepted, and so on
	complete bool     // the whole body arrived
}

func startLenientBackend(t testing.TB) *lenientBackend {
	t.Helper()
	lb := &lenientBackend{closed: map[int]bool{}}
	lb.raw = serveRaw(t, func(c net.Conn, id int) {
		lb.serve(c, id)
		lb.mu.Lock()
		lb.closed[id] = true
		lb.mu.Unlock()
	})
	lb.URL = lb.raw.URL
	return lb
}

func (lb *lenientBackend) serve(c net.Conn, id int) {
	br := bufio.NewReader(c)
	for {
		line, err := lenientLine(br)
		if err != nil {
			return
		}
		if line == "" {
			continue
		}
		lb.mu.Lock()
		idx := len(lb.seen)
		lb.seen = append(lb.seen, seenRequest{line: line, conn: id})
		lb.mu.Unlock()

		length, chunked := -1, false
		for {
			h, err := lenientLine(br)
			if err != nil {
				return
			}
			if h == "" {
				break
			}
			lb.mu.Lock()
			lb.seen[idx].header = append(lb.seen[idx].header, h)
			lb.mu.Unlock()
			name, value, _ := strings.Cut(h, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "content-length":
				if n, err := strconv.Atoi(strings.TrimSpace(value)); err == nil && length < 0 {
					length = n
				}
			case "transfer-encoding":
				chunked = chunked || strings.Contains(strings.ToLower(value), "chunked")
			}
		}
		switch {
		case length >= 0: // Content-Length first: what makes a server desynchronise
			_, err = io.CopyN(io.Discard, br, int64(length))
		case chunked:
			err = skipChunked(br)
		}
		if err != nil {
			return
		}
		lb.mu.Lock()
		lb.seen[idx].complete = true
		lb.mu.Unlock()
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func lenientLine(br *bufio.Reader) (string, error) {
	l, err := br.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

func skipChunked(br *bufio.Reader) error {
	for {
		line, err := lenientLine(br)
		if err != nil {
			return err
		}
		hex, _, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return err
		}
		if size == 0 {
			for { // trailer section
				if l, err := lenientLine(br); err != nil || l == "" {
					return err
				}
			}
		}
		if _, err := io.CopyN(io.Discard, br, size); err != nil {
			return err
		}
		if _, err := lenientLine(br); err != nil {
			return err
		}
	}
}

// requests returns what the backend has read so far.
func (lb *lenientBackend) requests() []seenRequest {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return append([]seenRequest(nil), lb.seen...)
}

// connClosed reports whether the backend's connection id has ended.
func (lb *lenientBackend) connClosed(id int) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.closed[id]
}

// checkNothingSmuggled fails t if any request line the backend read is the embedded one.
func (lb *lenientBackend) checkNothingSmuggled(t *testing.T) {
	t.Helper()
	for _, r := range lb.requests() {
		if strings.Contains(r.line, "/smuggled") {
			t.Errorf("the embedded request reached the backend: %q", r.line)
		}
	}
}

// reach is what a probe's first request may do at the backend.
type reach int

const (
	never   reach = iota // nothing reaches it
	once                 // it arrives, whole, once
	partial              // it may arrive, but never completes
)

// chunk frames s as one chunk of a chunked body.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

func TestSmugglingProbes(t *testing.T) {
	lb := startLenientBackend(t)
	p := startProxy(t, "[server]\nmax_header_bytes = 4096\n"+poolConfig("retries = 0", lb.URL), nil)

	const post = "POST /first HTTP/1.1\r\nHost: h.test\r\n"
	probes := []struct {
		name    string
		request string
		status  int // of the one response before the connection closes
		reach   reach
	}{
		// Both framings at once: RFC 9112 §6.3 says such a message "ought to
		// be handled as an error"; Portico refuses it, as nginx does, and
		// closes. So does obsolete line folding, which could hide a field.
		{"Content-Length and chunked (CL.TE)",
			post + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"chunked and a short Content-Length (TE.CL)",
			post + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n" + smuggled, 400, never},
		{"chunked in upper case with Content-Length", post + "Content-Length: 6\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"chunked after a tab with Content-Length", post + "Content-Length: 6\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"chunked folded onto a continuation line", post + "Content-Length: 6\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"a field folded onto a continuation line", post + "X-Probe: a\r\n b\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, never},
		// HTTP/1.0 has no Transfer-Encoding: RFC 9112 §6.1 calls it faulty
		// framing.
		{"HTTP/1.0 keep-alive with chunked", "POST /first HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled, 400, never},
		{"HTTP/1.0 keep-alive with Content-Length and chunked",
			"POST /first HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 400, never},

		// Transfer-Encoding other than a single, final "chunked": Portico
		// answers 501 (RFC 9112 §6.1's SHOULD for codings it does not know)
		// and closes.
		{"two Transfer-Encoding fields", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled, 501, never},
		{"chunked, identity", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, 501, never},
		{"chunked not last", post + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + smuggled, 501, never},
		{"gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + smuggled, 501, never},
		{"xchunked", post + "Content-Length: 6\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled, 501, never},
		{"identity with Content-Length", post + "Content-Length: 6\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled, 501, never},

		// Header syntax refused with 400.
		{"space before the colon", post + "Content-Length: 6\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"whitespace before the first header", "POST /first HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: h.test\r\nContent-Length: 6\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"two different Content-Length values", post + "Content-Length: 6\r\nContent-Length: 41\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"Content-Length list", post + "Content-Length: 6, 41\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"negative Content-Length", post + "Content-Length: -1\r\n\r\n" + smuggled, 400, never},
		{"Content-Length with a sign", post + "Content-Length: +6\r\n\r\n0\r\n\r\n" + smuggled, 400, never},
		{"NUL in a value", post + "X-Probe: a\x00b\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, never},
		{"CR in a value", post + "X-Probe: a\rb\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, never},
		{"LF in a value", post + "X-Probe: a\nb\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, never},
		{"HTTP/0.9 request", "GET /smuggled\r\n\r\n", 400, never},
		{"double space in the request line", "GET  /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n", 400, never},
		{"HTTP/1.1 without Host", "POST /first HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, never},
		{"two Hosts", "POST /first HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, never},
		{"header block over max_header_bytes", post + "X-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n" + smuggled, 431, never},

		// Bodies that break their own framing: the client's error, 400.
		{"chunk size zz", post + "Transfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "zz\r\n" + smuggled, 400, partial},
		{"chunk size over 64 bits", post + "Transfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "10000000000000000\r\n" + smuggled, 400, partial},
		{"chunk size in 0x form", post + "Transfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "0x5\r\nhello\r\n0\r\n\r\n" + smuggled, 400, partial},
		{"chunk data longer than its size", post + "Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n" + smuggled, 400, partial},
		{"broken trailer", post + "Transfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "0\r\nX-Trailer: ok\r\nno colon here\r\n\r\n" + smuggled, 400, partial},
	}
	for _, pr := range probes {
		t.Run(pr.name, func(t *testing.T) {
			before := len(lb.requests())
			conn, br := dialRaw(t, p.Addr)
			writeRaw(t, conn, pr.request)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the response: %v", err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != pr.status {
				t.Errorf("status %d %q, want %d", res.StatusCode, body, pr.status)
			}
			// Whatever the status, nothing follows: the connection closes.
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the response the connection is not closed: read %q, %v", rest, err)
			}

			got := lb.requests()[before:]
			switch pr.reach {
			case never:
				if len(got) > 0 {
					t.Errorf("backend read %+v, want nothing", got)
				}
			case once:
				if len(got) != 1 || got[0].line != "POST /first HTTP/1.1" || !got[0].complete {
					t.Errorf("backend read %+v, want the first request once, whole", got)
				}
			case partial:
				for _, r := range got {
					if r.line != "POST /first HTTP/1.1" || r.complete {
						t.Errorf("backend read %+v, want at most the first request, never whole", got)
					}
				}
			}
		})
	}
	lb.checkNothingSmuggled(t)
}

// Well-formed requests keep working, with keep-alive where the framing
// allows it.
func TestWellFormedRequestsPass(t *testing.T) {
	lb := startLenientBackend(t)
	p := startPool(t, "retries = 0", lb.URL)
	get := "GET /a HTTP/1.1\r\nHost: h.test\r\n\r\n"

	type step struct {
		write   string
		answers int // 200 responses it gets
	}
	cases := []struct {
		name     string
		steps    []step   // each written after the answers to the one before
		lines    []string // request lines the backend reads
		keepOpen bool     // the connection stays open afterwards
	}{
		{"two GETs on one connection", []step{{get, 1}, {get, 1}}, []string{"GET /a HTTP/1.1", "GET /a HTTP/1.1"}, true},
		{"Content-Length POST", []step{{"POST /cl HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\n\r\nhello", 1}}, []string{"POST /cl HTTP/1.1"}, true},
		{"chunked POST", []step{{"POST /te HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "0\r\n\r\n", 1}}, []string{"POST /te HTTP/1.1"}, true},
		{"a GET pipelined after a chunked POST", []step{{"POST /te HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "0\r\n\r\n" + get, 2}}, []string{"POST /te HTTP/1.1", "GET /a HTTP/1.1"}, true},
		{"HTTP/1.0 keep-alive", []step{{"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1}, {"POST /cl HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", 1}}, []string{"GET /a HTTP/1.1", "POST /cl HTTP/1.1"}, true},
		{"HTTP/1.0 without keep-alive", []step{{"GET /a HTTP/1.0\r\n\r\n", 1}}, []string{"GET /a HTTP/1.1"}, false},
		{"two pipelined GETs in one write", []step{{get + strings.Replace(get, "/a", "/b", 1), 2}}, []string{"GET /a HTTP/1.1", "GET /b HTTP/1.1"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(lb.requests())
			conn, br := dialRaw(t, p.Addr)
			for i, st := range tc.steps {
				writeRaw(t, conn, st.write)
				for j := range st.answers {
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("write %d, response %d: %v", i+1, j+1, err)
					}
					body, _ := io.ReadAll(res.Body)
					if res.StatusCode != http.StatusOK || string(body) != "ok" {
						t.Fatalf("write %d, response %d: %d %q, want 200 ok", i+1, j+1, res.StatusCode, body)
					}
				}
			}
			var lines []string
			for _, r := range lb.requests()[before:] {
				if !r.complete {
					t.Errorf("backend read %q without its whole body", r.line)
				}
				lines = append(lines, r.line)
			}
			if strings.Join(lines, "|") != strings.Join(tc.lines, "|") {
				t.Errorf("backend read %q, want %q", lines, tc.lines)
			}
			// Still open: another request on it is answered. Closed: EOF.
			if tc.keepOpen {
				writeRaw(t, conn, get)
				if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusOK {
					t.Errorf("connection not kept open: %v", err)
				}
			} else if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("connection not closed: read %q, %v", rest, err)
			}
		})
	}
}
