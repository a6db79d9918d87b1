package h1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Deadlines, hijacking, bodies left unread and trailers. Each test runs against
// Portico's server ("h1") and, as the oracle, net/http's ("net_http"),
// unless net/http is known to fail it too (said where so).

func netHTTPImpl(cfg *http.Server, ln net.Listener) (func(context.Context) error, func() error, <-chan error) {
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(ln) }()
	return cfg.Shutdown, cfg.Close, done
}

func onBoth(t *testing.T, f func(t *testing.T)) {
	t.Run("h1", f)
	t.Run("net_http", func(t *testing.T) {
		saved := serveImpl
		serveImpl = netHTTPImpl
		defer func() { serveImpl = saved }()
		f(t)
	})
}

// A request whose handler runs longer than what was left of the read
// deadline in force when its head arrived (ReadHeaderTimeout from the
// accept for a first request, IdleTimeout from the previous response for a
// later one) must not see its context cancelled, and the connection stays
// usable: the background read takes that stale deadline for what it is
// (the wait's), not for the client leaving.
func TestServerSlowHandlerOutlivesWaitDeadline(t *testing.T) {
	cases := []struct {
		name         string
		header, idle time.Duration
		warmup       bool // a first request, so the slow one waits under IdleTimeout
	}{
		{"first request, ReadHeaderTimeout", 150 * time.Millisecond, time.Minute, false},
		{"second request, IdleTimeout", 0, 150 * time.Millisecond, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			onBoth(t, func(t *testing.T) {
				errs := make(chan error, 2)
				s := startSuite(t, &http.Server{
					ReadHeaderTimeout: tc.header,
					IdleTimeout:       tc.idle,
					Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if r.URL.Path == "/slow" {
							select {
							case <-r.Context().Done():
							case <-time.After(600 * time.Millisecond):
							}
							errs <- r.Context().Err()
						}
						_, _ = io.WriteString(w, "ok")
					}),
				})
				sc := dialSuite(t, s.addr)
				if tc.warmup {
					sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
					sc.response("GET")
				}
				sc.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
				if err := waitFor(t, errs, "the slow handler"); err != nil {
					t.Errorf("the slow request's context ended: %v (the client is still there)", err)
				}
				if resp, body := sc.response("GET"); resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("got %d %q", resp.StatusCode, body)
				}
				sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
				if _, _, err := sc.tryResponse("GET"); err != nil {
					t.Errorf("the connection did not serve a request after the slow one: %v", err)
				}
			})
		})
	}
}

// ReadHeaderTimeout bounds the head only: a body that takes longer to
// arrive is read whole (net/http clears the deadline once the head is in,
// ReadTimeout being zero); so does Portico's, before the first body read.
func TestServerSlowBodyOutlivesHeaderTimeout(t *testing.T) {
	onBoth(t, func(t *testing.T) {
		type result struct {
			body string
			err  error
		}
		got := make(chan result, 1)
		s := startSuite(t, &http.Server{
			ReadHeaderTimeout: 150 * time.Millisecond,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				got <- result{string(b), err}
			}),
		})
		sc := dialSuite(t, s.addr)
		sc.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
		time.Sleep(400 * time.Millisecond)
		sc.send("cd")
		if r := waitFor(t, got, "the handler"); r.err != nil || r.body != "abcd" {
			t.Errorf("body %q, %v; want \"abcd\", nil", r.body, r.err)
		}
	})
}

// A hijacked connection carries no deadline the server set, as with
// net/http (hijackLocked clears both), though Portico's server keeps a
// write deadline from one request to the next (the proxy's send_timeout
// sets one on every response): left in force, it would end a WebSocket or
// h2c tunnel opened on a reused connection.
func TestServerHijackClearsEarlierWriteDeadline(t *testing.T) {
	onBoth(t, func(t *testing.T) {
		errs := make(chan error, 1)
		s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/a" {
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_, _ = io.WriteString(w, "a")
				return
			}
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			time.Sleep(300 * time.Millisecond)
			_, err = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
			errs <- err
		})
		sc := dialSuite(t, s.addr)
		sc.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
		sc.response("GET")
		sc.send("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
		if err := waitFor(t, errs, "the hijacker"); err != nil {
			t.Errorf("the hijacker's write failed: %v", err)
		}
	})
}

// The same stale write deadline must not cut the "100 Continue" the server
// sends when the handler first reads the body (nor a 1xx the handler
// writes). net/http fails this one (it never clears a handler's write
// deadline short of a hijack); Portico's server keeps deadlines across
// requests and clears a stale one before any write, so only "h1" runs.
func TestServerContinueAfterEarlierWriteDeadline(t *testing.T) {
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a" {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = io.WriteString(w, "a")
			return
		}
		b, err := io.ReadAll(r.Body)
		got <- result{string(b), err}
		_, _ = io.WriteString(w, "done")
	})
	sc := dialSuite(t, s.addr)
	sc.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
	sc.response("GET")
	time.Sleep(300 * time.Millisecond)
	sc.send("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	_ = sc.c.SetReadDeadline(time.Now().Add(time.Second))
	line, err := sc.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("want a 100 Continue, got %q, %v", line, err)
	}
}

// A read deadline the connection's background read leaves behind must not
// reach the hijacker: stopping that read sets the deadline in the past,
// and whatever deadline was recorded before (none, a handler's, a stale
// one cleared), the hijacker's reads must not time out at once.
// A handler that hijacks while the background read runs (it starts after
// watchDelay) gets what the client sends: bytes that came while the read
// waited, or after it was stopped.
func TestServerHijackAfterBackgroundReadCanRead(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after time.Duration // the handler's wait before it hijacks; the client's before it sends
	}{
		{"read stopped, bytes come later", 4 * watchDelay, 100 * time.Millisecond},
		{"bytes came during the read", 100 * time.Millisecond, 4 * watchDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onBoth(t, func(t *testing.T) {
				type result struct {
					s   string
					err error
				}
				got := make(chan result, 1)
				s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
					time.Sleep(tc.before)
					c, brw, err := http.NewResponseController(w).Hijack()
					if err != nil {
						got <- result{"", err}
						return
					}
					defer c.Close()
					b := make([]byte, 4)
					_, err = io.ReadFull(brw, b)
					got <- result{string(b), err}
				})
				sc := dialSuite(t, s.addr)
				sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
				time.Sleep(tc.after)
				sc.send("ping")
				if r := waitFor(t, got, "the hijacker"); r.err != nil || r.s != "ping" {
					t.Errorf("the hijacker read %q, %v; want \"ping\"", r.s, r.err)
				}
			})
		})
	}
}

// The status a handler set before Hijack goes out, as with net/http
// (coder/websocket sets 101 with WriteHeader and then hijacks).
func TestServerHijackAfterWriteHeaderSendsIt(t *testing.T) {
	onBoth(t, func(t *testing.T) {
		s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "x")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
			_ = c.Close()
		})
		sc := dialSuite(t, s.addr)
		sc.send("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
		_ = sc.c.SetReadDeadline(time.Now().Add(waitBound))
		line, _ := bufio.NewReader(sc.br).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 101 ") {
			t.Errorf("got %q, want the handler's 101", line)
		}
	})
}

// When the server will close after a response because the body is left
// unread (never asked for with 100-continue, or too long to drain), net/http
// says so with "Connection: close" in that response, deciding before the
// head goes out; so must Portico's server.
func TestServerUnreadBodyCloseAnnounced(t *testing.T) {
	cases := []struct{ name, req string }{
		{"expect 100-continue", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"},
		{"long body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n" + strings.Repeat("x", 1000)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			onBoth(t, func(t *testing.T) {
				s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "no", http.StatusForbidden)
				})
				sc := dialSuite(t, s.addr)
				sc.send(tc.req)
				// (net/http then goes on reading the announced body before
				// it closes, so only an unannounced close is looked for.)
				if resp, _ := sc.response("POST"); !resp.Close {
					sc.expectClosed()
					t.Errorf("the server closed the connection after a response without \"Connection: close\" (header %v)", resp.Header)
				}
			})
		})
	}
}

// Reading a chunked body's end twice must not add its trailer twice.
func TestServerTrailerSetOnce(t *testing.T) {
	onBoth(t, func(t *testing.T) {
		got := make(chan []string, 1)
		s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
			_, _ = r.Body.Read(make([]byte, 1))
			_, _ = r.Body.Read(make([]byte, 1))
			got <- r.Trailer["X-T"]
		})
		sc := dialSuite(t, s.addr)
		sc.send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n1\r\na\r\n0\r\nX-T: v\r\n\r\n")
		if v := waitFor(t, got, "the handler"); len(v) != 1 {
			t.Errorf("r.Trailer[X-T] = %q, want one value", v)
		}
	})
}

// After the handler returns, its request body is closed whatever the
// keep-alive decision (net/http's finishRequest closes it always).
// Otherwise a goroutine the handler left reading the body reads the
// connection, buffer and all, while the server closes it (a data race under
// -race).
func TestServerBodyClosedAfterHandlerEvenOnClose(t *testing.T) {
	onBoth(t, func(t *testing.T) {
		errs := make(chan error, 1)
		s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			go func() {
				time.Sleep(200 * time.Millisecond)
				_, err := r.Body.Read(make([]byte, 64))
				errs <- err
			}()
		})
		sc := dialSuite(t, s.addr)
		sc.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello")
		sc.response("POST")
		sc.send("world") // net/http's Close drains it before the straggler reads
		if err := waitFor(t, errs, "the handler's straggler"); err == nil {
			t.Error("the body could still be read after the handler returned")
		}
	})
}
