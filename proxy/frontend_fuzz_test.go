package proxy

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/internal/leakcheck"
	"github.com/portico/portico/internal/testlog"
)

// FuzzFrontEnd writes arbitrary bytes to a live Portico listener in front of
// the lenient backend and checks that nothing panics, that every goroutine
// and file descriptor the exchange took is given back, and that the backend
// gets only requests net/http (a second, independent parser) reads as
// valid, in order, none after one that must end the connection. Seeds are in testdata/fuzz/FuzzFrontEnd.
func FuzzFrontEnd(f *testing.F) {
	lb := startLenientBackend(f)
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := parseConfig(f, "[server]\nread_header_timeout = \"1s\"\nclient_body_timeout = \"1s\"\n"+poolConfig("retries = 0", lb.URL), nil)
	var open atomic.Int64 // client connections the server has not closed
	snap, addr := serveProxy(f, cfg, log, func(srv *http.Server, ln net.Listener) net.Listener {
		srv.ConnState = func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		}
		return ln
	})

	// exchange sends raw on a new connection and reads until the proxy closes it.
	exchange := func(t testing.TB, raw []byte) {
		conn, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * ioTimeout))
		_, _ = conn.Write(raw) // the proxy may close before it has read it all
		_ = conn.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, conn); err != nil && !isReset(err) {
			t.Fatalf("reading the answers: %v", err)
		}
	}
	// settle waits until the exchange has left nothing behind: the server
	// has closed its side, idle backend connections are closed, the backend
	// has read all it was sent (a request the client abandoned may still be
	// on its way), and goroutines and descriptors are back to where they
	// were.
	settle := func(t testing.TB, goroutines, fds int) {
		waitFor(t, "the server to close the connection", func() bool { return open.Load() == 0 })
		snap.Close()
		lb.raw.quiesce(t)
		// A dial the abandoned request started may still land in the idle
		// pool: close idle connections until the goroutines are back.
		for deadline := time.Now().Add(ioTimeout); runtime.NumGoroutine() > goroutines && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			snap.Close()
		}
		leakcheck.Settle(t, goroutines, "a fuzz exchange")
		if fds >= 0 {
			waitFor(t, "file descriptors to be released", func() bool { return openFDs() <= fds })
		}
	}
	// The baseline is taken in the goroutine inputs run in, before the
	// first exchange: after each, only what ran before it may be left.
	var baseline sync.Once
	var goroutines, fds int

	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		baseline.Do(func() { goroutines, fds = runtime.NumGoroutine(), openFDs() })
		before, logged := len(lb.requests()), len(logs.String())
		exchange(t, raw)
		settle(t, goroutines, fds)

		var got []string
		for _, r := range lb.requests()[before:] {
			method, _, _ := strings.Cut(r.line, " ")
			got = append(got, method)
		}
		if allowed := forwardable(raw); !subsequence(got, allowed) {
			t.Errorf("backend got requests %q; of the input only %q may reach it", got, allowed)
		}
		if l := logs.String()[logged:]; strings.Contains(l, "panic") {
			t.Errorf("the server logged a panic:\n%s", l)
		}
	})
}

// forwardable returns the methods of the requests in raw that Portico may
// send on: each that net/http reads whole, or whose header it reads before
// the body breaks, in order, up to the first after which the connection
// ends (broken body, Connection: close, HTTP/1.0 without keep-alive).
// Portico's own parser is stricter than net/http's (it refuses
// Content-Length with Transfer-Encoding, and obsolete line folding), so it
// may forward fewer.
func forwardable(raw []byte) []string {
	br := bufio.NewReader(bytes.NewReader(raw))
	var methods []string
	for {
		if len(methods) > 0 && methods[len(methods)-1] == http.MethodPost {
			// net/http forgives up to 4 stray CR or LF after a POST.
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			_, _ = br.Discard(n)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return methods
		}
		methods = append(methods, req.Method)
		if _, err := io.Copy(io.Discard, req.Body); err != nil || req.Close {
			return methods
		}
	}
}

// subsequence reports whether got is allowed with some elements left out.
func subsequence(got, allowed []string) bool {
	i := 0
	for _, g := range got {
		for i < len(allowed) && allowed[i] != g {
			i++
		}
		if i == len(allowed) {
			return false
		}
		i++
	}
	return true
}

// openFDs counts this process's open file descriptors; -1 where /proc is
// missing.
func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}
