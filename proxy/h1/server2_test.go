package h1

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// Connection lifetime: keep-alive and close, flushing, hijacking, request
// contexts, deadlines, timeouts, ConnState, Shutdown and Close.

func TestServerConnectionClose(t *testing.T) {
	const next = "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"
	cases := []struct {
		name, req string
		closed    *bool // nil: not pinned
	}{
		{"HTTP/1.1 stays open", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", new(false)},
		{"client sends Connection: close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", new(true)},
		{"handler sets Connection: close", "GET /close HTTP/1.1\r\nHost: h\r\n\r\n", new(true)},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: h\r\n\r\n", new(true)},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/close" {
					w.Header().Set("Connection", "close")
				}
				_, _ = io.WriteString(w, "hello")
			})
			sc := dialSuite(t, s.addr)
			sc.send(tc.req)
			if resp, body := sc.response("GET"); resp.StatusCode != 200 || body != "hello" {
				t.Fatalf("got %d %q, want 200 hello", resp.StatusCode, body)
			}
			if tc.closed == nil {
				return
			}
			if *tc.closed {
				// A request sent after the closing one is never served.
				_ = sc.c.SetWriteDeadline(time.Now().Add(waitBound))
				_, _ = io.WriteString(sc.c, next)
				if rest := sc.expectClosed(); rest != "" {
					t.Errorf("bytes after the last response: %q", rest)
				}
				if n := s.calls.Load(); n != 1 {
					t.Errorf("%d requests reached the handler, want 1", n)
				}
				return
			}
			sc.send(next)
			if resp, _ := sc.response("GET"); resp.StatusCode != 200 {
				t.Fatalf("second request: %d", resp.StatusCode)
			}
		})
	}
}

func TestServerFlushSendsBeforeHandlerReturns(t *testing.T) {
	release := make(chan struct{})
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		<-release
		_, _ = io.WriteString(w, "second")
	})
	defer close(release)
	sc := dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	_ = sc.c.SetReadDeadline(time.Now().Add(waitBound))
	resp, err := http.ReadResponse(sc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("read %q, %v while the handler runs, want \"first\"", first, err)
	}
	release <- struct{}{}
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "second" {
		t.Fatalf("then %q, %v, want \"second\"", rest, err)
	}
}

// connStates records the ConnState transitions of a server's connections.
type connStates struct {
	mu     sync.Mutex
	states []http.ConnState
}

func (cs *connStates) hook(_ net.Conn, st http.ConnState) {
	cs.mu.Lock()
	cs.states = append(cs.states, st)
	cs.mu.Unlock()
}

// waitLast waits until the last state recorded is st and returns them all.
func (cs *connStates) waitLast(t *testing.T, st http.ConnState) []http.ConnState {
	t.Helper()
	for deadline := time.Now().Add(waitBound); ; time.Sleep(5 * time.Millisecond) {
		cs.mu.Lock()
		got := slices.Clone(cs.states)
		cs.mu.Unlock()
		if len(got) > 0 && got[len(got)-1] == st || time.Now().After(deadline) {
			return got
		}
	}
}

func TestServerHijack(t *testing.T) {
	var cs connStates
	type hijacked struct {
		c     net.Conn
		extra string
	}
	got := make(chan hijacked, 1)
	s := startSuite(t, &http.Server{ConnState: cs.hook, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		extra := make([]byte, 5)
		_ = c.SetReadDeadline(time.Now().Add(waitBound))
		_, _ = io.ReadFull(brw.Reader, extra)
		_ = c.SetReadDeadline(time.Time{})
		got <- hijacked{c, string(extra)}
	})})
	sc := dialSuite(t, s.addr)
	// "EXTRA" arrives with the head, so the server has likely buffered
	// it already: it must hand it over through the bufio.Reader.
	sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\nEXTRA")
	h := waitFor(t, got, "the hijacking handler")
	defer h.c.Close()
	if h.extra != "EXTRA" {
		t.Errorf("bytes after the head: %q, want EXTRA", h.extra)
	}
	if states := cs.waitLast(t, http.StateHijacked); !slices.Equal(states, []http.ConnState{http.StateNew, http.StateActive, http.StateHijacked}) {
		t.Errorf("ConnState %v, want new, active, hijacked", states)
	}
	// The handler has returned: the server neither answers, nor reads,
	// nor closes the connection any more.
	sc.expectOpen(200 * time.Millisecond)
	sc.send("ping")
	b := make([]byte, 4)
	_ = h.c.SetReadDeadline(time.Now().Add(waitBound))
	if _, err := io.ReadFull(h.c, b); err != nil || string(b) != "ping" {
		t.Fatalf("the hijacker read %q, %v", b, err)
	}
	if _, err := io.WriteString(h.c, "pong"); err != nil {
		t.Fatal(err)
	}
	_ = h.c.Close()
	if rest := sc.expectClosed(); rest != "pong" {
		t.Errorf("client read %q, want only the hijacker's pong", rest)
	}
}

func TestServerContextCancelledWhenClientLeaves(t *testing.T) {
	entered, result := make(chan struct{}, 1), make(chan error, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(waitBound):
		}
		result <- r.Context().Err()
	})
	sc := dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	waitFor(t, entered, "the handler")
	_ = sc.c.Close()
	if err := <-result; err == nil {
		t.Fatal("the request context was not cancelled when the client closed")
	}
}

func TestServerContextCancelledAfterHandler(t *testing.T) {
	ctxs := make(chan context.Context, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) { ctxs <- r.Context() })
	sc := dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	sc.response("GET")
	ctx := waitFor(t, ctxs, "the handler")
	waitFor(t, ctx.Done(), "the context's cancellation") // the connection stays open
}

func TestServerDeadlinesSupported(t *testing.T) {
	errs := make(chan [2]error, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		at := time.Now().Add(time.Minute)
		errs <- [2]error{rc.SetReadDeadline(at), rc.SetWriteDeadline(at)}
		_, _ = io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	sc := dialSuite(t, s.addr)
	sc.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
	if resp, body := sc.response("POST"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if e := waitFor(t, errs, "the handler"); e[0] != nil || e[1] != nil {
		t.Errorf("SetReadDeadline: %v, SetWriteDeadline: %v, want nil for HTTP/1", e[0], e[1])
	}
}

func TestServerReadHeaderTimeout(t *testing.T) {
	const half = "GET / HTTP/1.1\r\nHost: h\r\n"
	for _, first := range []bool{true, false} {
		name := map[bool]string{true: "first request", false: "second request"}[first]
		t.Run(name, func(t *testing.T) {
			s := startSuite(t, &http.Server{
				ReadHeaderTimeout: 150 * time.Millisecond,
				Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
			})
			sc := dialSuite(t, s.addr)
			if !first {
				sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
				sc.response("GET")
			}
			sc.send(half) // and stall
			sc.expectClosed()
			if n, want := s.calls.Load(), map[bool]int64{true: 0, false: 1}[first]; n != want {
				t.Errorf("%d requests reached the handler, want %d", n, want)
			}
		})
	}
}

func TestServerIdleTimeout(t *testing.T) {
	s := startSuite(t, &http.Server{
		IdleTimeout: 300 * time.Millisecond,
		Handler:     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
	})
	sc := dialSuite(t, s.addr)
	for range 2 { // kept alive between requests that follow at once
		sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, _ := sc.response("GET"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if rest := sc.expectClosed(); rest != "" {
		t.Errorf("bytes on an idle connection: %q", rest)
	}
}

// A connection that never sends a byte does not live forever. net/http
// bounds it by ReadHeaderTimeout only, not by IdleTimeout alone, so the
// suite sets ReadHeaderTimeout in both cases.
func TestServerSilentConnectionClosed(t *testing.T) {
	cases := []struct {
		name         string
		header, idle time.Duration
	}{
		{"ReadHeaderTimeout", 150 * time.Millisecond, 0},
		{"ReadHeaderTimeout and IdleTimeout", 150 * time.Millisecond, 150 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startSuite(t, &http.Server{
				ReadHeaderTimeout: tc.header,
				IdleTimeout:       tc.idle,
				Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
			})
			sc := dialSuite(t, s.addr)
			sc.expectClosed()
		})
	}
}

func TestServerConnState(t *testing.T) {
	var cs connStates
	s := startSuite(t, &http.Server{ConnState: cs.hook, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	sc := dialSuite(t, s.addr)
	for range 2 {
		sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		sc.response("GET")
	}
	cs.waitLast(t, http.StateIdle)
	_ = sc.c.Close()
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle, http.StateClosed}
	if got := cs.waitLast(t, http.StateClosed); !slices.Equal(got, want) {
		t.Errorf("ConnState %v, want %v", got, want)
	}
}

func TestServerShutdown(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	idle := dialSuite(t, s.addr)
	idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.response("GET")
	active := dialSuite(t, s.addr)
	active.send("GET /block HTTP/1.1\r\nHost: h\r\n\r\n")
	waitFor(t, entered, "the blocking handler")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.shutdown(ctx)
	}()
	idle.expectClosed()
	waitFor(t, s.served, "Serve to return")
	if c, err := net.DialTimeout("tcp", s.addr, waitBound); err == nil {
		_ = c.Close()
		t.Error("the listener still accepts after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}

	close(release)
	resp, body := active.response("GET")
	if resp.StatusCode != 200 || body != "done" {
		t.Errorf("the request in flight got %d %q", resp.StatusCode, body)
	}
	active.expectClosed()
	if err := waitFor(t, shut, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestServerClose(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	sc := dialSuite(t, s.addr)
	sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	waitFor(t, entered, "the handler")
	if err := s.closeNow(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if rest := sc.expectClosed(); rest != "" {
		t.Errorf("bytes after Close: %q", rest)
	}
	waitFor(t, s.served, "Serve to return")
}
