package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico/portico/internal/testlog"
)

// A request body that breaks its framing, ends early, stalls or grows past
// max_body_bytes is the client's error: 400, 408 or 413, never 502. It is
// logged at info, says nothing about the backend's health, closes the client
// connection, and the backend connection that got part of it is closed, so
// the partial request never completes there.
func TestClientBodyErrors(t *testing.T) {
	lb := startLenientBackend(t)
	var logs testlog.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// One failure reported against the backend would eject it.
	p := startProxyLog(t, "[server]\nclient_body_timeout = \"300ms\"\n"+
		poolConfig("retries = 0\n[pools.p.passive]\nmax_fails = 1\nmax_ejected_percent = 100", lb.URL)+
		"max_body_bytes = 16\n[[routes]]\npath_prefix = \"/stream\"\npool = \"p\"\n", nil, log)

	const chunked = "POST /partial HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"
	cases := []struct {
		name      string
		head      string // request line, header and the body before it breaks
		fail      string // what breaks it, written once the backend has the request (partial)
		halfClose bool   // then the client stops sending
		status    int    // the answer; 0: either 400 or a close without one
		reach     reach
	}{
		{"chunk size zz", chunked + chunk("hello"), "zz\r\n", false, 400, partial},
		{"chunk size over 64 bits", chunked + chunk("hello"), "10000000000000000\r\nhello\r\n0\r\n\r\n", false, 400, partial},
		{"broken trailer", chunked + chunk("hello"), "0\r\nX-Ok: 1\r\nno colon\r\n\r\n", false, 400, partial},
		// A body larger than smallBody streams to the backend as it comes
		// (on /stream, which has no max_body_bytes); a smaller one is read
		// whole first, so the backend never sees it.
		{"body shorter than Content-Length", fmt.Sprintf("POST /stream/partial HTTP/1.1\r\nHost: h.test\r\nContent-Length: %d\r\n\r\nhello", 2*smallBody), "", true, 0, partial},
		{"body stalls past client_body_timeout", fmt.Sprintf("POST /stream/partial HTTP/1.1\r\nHost: h.test\r\nContent-Length: %d\r\n\r\nhello", 2*smallBody), "", false, 408, partial},
		{"small body shorter than Content-Length", "POST /partial HTTP/1.1\r\nHost: h.test\r\nContent-Length: 10\r\n\r\nhello", "", true, 0, never},
		{"small body stalls past client_body_timeout", "POST /partial HTTP/1.1\r\nHost: h.test\r\nContent-Length: 10\r\n\r\nhello", "", false, 408, never},
		{"Content-Length over max_body_bytes", "POST /partial HTTP/1.1\r\nHost: h.test\r\nContent-Length: 17\r\n\r\n", "", false, 413, never},
		{"chunked body over max_body_bytes", chunked + chunk("0123456789"), chunk("0123456789") + "0\r\n\r\n", false, 413, partial},
	}
	c := newClient(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(lb.requests())
			conn, br := dialRaw(t, p.Addr)
			writeRaw(t, conn, tc.head)
			if tc.reach == partial {
				waitFor(t, "the backend to read the request", func() bool { return len(lb.requests()) > before })
			}
			writeRaw(t, conn, tc.fail)
			if tc.halfClose {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			res, err := http.ReadResponse(br, nil)
			switch {
			case err != nil && tc.status != 0:
				t.Fatalf("no response (%v), want %d", err, tc.status)
			case err == nil && tc.status == 0 && res.StatusCode != http.StatusBadRequest,
				err == nil && tc.status != 0 && res.StatusCode != tc.status:
				t.Errorf("status %d, want %d", res.StatusCode, max(tc.status, 400))
			}
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
					t.Errorf("client connection not closed after the error: read %q, %v", rest, err)
				}
			}

			got := lb.requests()[before:]
			switch {
			case tc.reach == never && len(got) > 0:
				t.Errorf("backend read %+v, want nothing", got)
			case tc.reach == partial && (len(got) != 1 || got[0].complete):
				t.Errorf("backend read %+v, want the request once, never whole", got)
			case tc.reach == partial:
				waitFor(t, "the backend connection of the partial request to close", func() bool { return lb.connClosed(got[0].conn) })
			}
			// The pool still works, on a fresh backend connection.
			if res, body := get(t, c, p.URL+"/after", ""); res.StatusCode != http.StatusOK {
				t.Errorf("next request: %d %q, want 200", res.StatusCode, body)
			}
			if st := p.Snap.Pools()[0].Backends()[0].State(); st.Fails != 0 || st.Ejections != 0 || !st.Usable {
				t.Errorf("backend state %+v: the client's error counted against it", st)
			}
		})
	}
	checkLogLevels(t, logs.String(), "client request body failed", len(cases))
}

// checkLogLevels fails t unless msg was logged at least n times, always at
// info, and nothing at warn or above.
func checkLogLevels(t *testing.T, logs, msg string, n int) {
	t.Helper()
	seen := 0
	for line := range strings.SplitSeq(strings.TrimSpace(logs), "\n") {
		var rec struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line %q: %v", line, err)
			continue
		}
		if rec.Level == "WARN" || rec.Level == "ERROR" {
			t.Errorf("logged at %s: %s", rec.Level, line)
		}
		if rec.Msg == msg {
			seen++
			if rec.Level != "INFO" {
				t.Errorf("%q logged at %s, want INFO", msg, rec.Level)
			}
		}
	}
	if seen < n {
		t.Errorf("%q logged %d times, want %d\n%s", msg, seen, n, logs)
	}
}

// waitFor polls cond for up to ioTimeout: for state that changes inside the
// proxy or a backend with nothing to wait on.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(ioTimeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A request refused or answered without its body being read does not let
// the client hold the connection by never sending the body: net/http reads
// on for the rest, but only for a moment.
func TestUnreadBodyDoesNotHoldTheConnection(t *testing.T) {
	b := startBackend(t, textHandler("ok"))
	p := startProxy(t, `
[pools.p]
backends = [{ url = "`+b.URL+`" }]
[[routes]]
path_prefix = "/api"
pool = "p"
max_body_bytes = 10
`, nil)
	const head = "Host: h.test\r\nContent-Length: 100\r\n"
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"unrouted", "POST /other HTTP/1.1\r\n" + head + "\r\n", http.StatusNotFound},
		{"over max_body_bytes", "POST /api HTTP/1.1\r\n" + head + "\r\n", http.StatusRequestEntityTooLarge},
		{"over max_header_count", "POST /api HTTP/1.1\r\n" + head + strings.Repeat("X-Many: v\r\n", 101) + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, br := dialRaw(t, p.Addr)
			writeRaw(t, conn, tc.request)
			start := time.Now()
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			if _, err := io.Copy(io.Discard, br); err != nil {
				t.Fatalf("connection held open waiting for a body that never comes: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("connection closed after %v, want about %v", d, drainTimeout)
			}
		})
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend got %d requests", n)
	}
}
