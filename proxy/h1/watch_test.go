package h1

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// readCountingListener counts the reads in progress on the connections it
// accepts.
type readCountingListener struct {
	net.Listener
	reading atomic.Int64
}

func (l *readCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &readCountingConn{Conn: c, reading: &l.reading}, nil
}

type readCountingConn struct {
	net.Conn
	reading *atomic.Int64
}

func (c *readCountingConn) Read(p []byte) (int, error) {
	c.reading.Add(1)
	defer c.reading.Add(-1)
	return c.Conn.Read(p)
}

// A handler that ends within watchDelay has no read of the client running
// under it (the background read costs a goroutine and a hand-over); one
// that runs longer has, and so learns that its client left.
func TestBackgroundReadOnlyUnderSlowHandlers(t *testing.T) {
	type sample struct {
		reading int64
		err     error
	}
	seen := make(chan sample, 1)
	var ln *readCountingListener
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("run"))
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) && r.Context().Err() == nil {
			time.Sleep(time.Millisecond)
		}
		seen <- sample{ln.reading.Load(), r.Context().Err()}
	})
	base, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = &readCountingListener{Listener: base}
	s := NewServer(&http.Server{Handler: h})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })

	sc := dialSuite(t, ln.Addr().String())
	sc.send("GET /?run=" + (watchDelay / 5).String() + " HTTP/1.1\r\nHost: h\r\n\r\n")
	if got := waitFor(t, seen, "the quick handler"); got.reading != 0 {
		t.Errorf("%d reads of the client ran under a handler of %v; want none before %v", got.reading, watchDelay/5, watchDelay)
	}
	sc.response("GET")

	sc.send("GET /?run=" + (20 * watchDelay).String() + " HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(4 * watchDelay)
	_ = sc.c.Close()
	got := waitFor(t, seen, "the slow handler")
	if got.err == nil {
		t.Errorf("a handler running %v did not see its client leave", 20*watchDelay)
	}
}

// FieldValues hands its kept slice out once per response: a second call
// gets one of its own, and a response's values are empty when handed out.
func TestFieldValuesOncePerResponse(t *testing.T) {
	type fv interface{ FieldValues(int) []string }
	fail := make(chan string, 4)
	s := serveHandler(t, func(w http.ResponseWriter, r *http.Request) {
		a := w.(fv).FieldValues(3)
		b := w.(fv).FieldValues(3)
		for _, v := range a {
			if v != "" {
				fail <- "a value left from the previous response: " + v
			}
		}
		a[0], b[0] = "a", "b"
		if a[0] != "a" {
			fail <- "the second call's slice shares the first's"
		}
		w.Header()["X-Value"] = a[0:1:1]
	})
	sc := dialSuite(t, s.addr)
	for range 2 {
		sc.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if res, _ := sc.response("GET"); res.Header.Get("X-Value") != "a" {
			t.Fatalf("X-Value %q", res.Header.Get("X-Value"))
		}
	}
	select {
	case msg := <-fail:
		t.Fatal(msg)
	default:
	}
}
