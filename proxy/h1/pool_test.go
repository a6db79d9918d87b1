package h1

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpServer accepts loopback connections and hands each to the test.
func tcpServer(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		close(ch)
		for c := range ch {
			_ = c.Close()
		}
	})
	return ln.Addr().String(), ch
}

func testPool(t *testing.T, addr string, o Options) *Pool {
	t.Helper()
	d := net.Dialer{Timeout: time.Second}
	p := NewPool(func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, o)
	t.Cleanup(p.Close)
	return p
}

// get takes a connection and its server side.
func get(t *testing.T, p *Pool, accepted <-chan net.Conn) (*Conn, net.Conn) {
	t.Helper()
	c, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Reused() {
		return c, nil
	}
	select {
	case s := <-accepted:
		return c, s
	case <-time.After(time.Second):
		t.Fatal("no connection accepted")
	}
	return nil, nil
}

// finish ends an exchange cleanly, as a whole response would.
func finish(c *Conn) {
	c.body.done = true
	c.Release(true)
}

func TestPoolIsLIFOAndBounded(t *testing.T) {
	addr, accepted := tcpServer(t)
	p := testPool(t, addr, Options{MaxIdle: 2, IdleTimeout: time.Minute})
	var cs []*Conn
	for range 3 {
		c, _ := get(t, p, accepted)
		cs = append(cs, c)
	}
	for _, c := range cs {
		finish(c)
	}
	if n := p.Idle(); n != 2 {
		t.Fatalf("%d idle connections, want MaxIdle 2", n)
	}
	if c, _ := get(t, p, accepted); c != cs[1] || !c.Reused() {
		t.Errorf("got connection %p, want the last one returned (%p), reused", c, cs[1])
	}
}

func TestPoolDropsUncleanExchanges(t *testing.T) {
	addr, accepted := tcpServer(t)
	p := testPool(t, addr, Options{MaxIdle: 4})
	for _, tc := range []struct {
		name string
		end  func(c *Conn)
	}{
		{"caller says not ok", func(c *Conn) { c.body.done = true; c.Release(false) }},
		{"body not read to its end", func(c *Conn) { c.Release(true) }},
		{"discarded", func(c *Conn) { c.body.done = true; c.Discard(); c.Release(true) }},
		{"backend asked to close", func(c *Conn) { c.body.done, c.head.Close = true, true; c.Release(true) }},
		{"bytes left over", func(c *Conn) { c.body.done, c.w = true, 1; c.Release(true) }},
	} {
		c, _ := get(t, p, accepted)
		tc.end(c)
		if n := p.Idle(); n != 0 {
			t.Errorf("%s: connection kept for reuse", tc.name)
		}
	}
}

func TestPoolClosesExpiredConnections(t *testing.T) {
	addr, accepted := tcpServer(t)
	p := testPool(t, addr, Options{MaxIdle: 4, IdleTimeout: 100 * time.Millisecond})
	c, srv := get(t, p, accepted)
	finish(c)
	// The sweep closes it: the server sees the close without any new request.
	_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := srv.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("server read %v; want the idle connection closed by the pool", err)
	}
	if n := p.Idle(); n != 0 {
		t.Errorf("%d idle connections after the idle timeout", n)
	}
}

func TestPoolDetectsConnectionsClosedWhileIdle(t *testing.T) {
	addr, accepted := tcpServer(t)
	p := testPool(t, addr, Options{MaxIdle: 4, IdleTimeout: time.Minute})
	c, srv := get(t, p, accepted)
	finish(c)
	_ = srv.Close() // the backend's idle timeout, say
	time.Sleep(checkAfter + 20*time.Millisecond)
	c2, srv2 := get(t, p, accepted)
	if c2 == c || c2.Reused() || srv2 == nil {
		t.Fatal("a connection the backend closed while idle was reused")
	}

	// A live one idle as long is reused.
	finish(c2)
	time.Sleep(checkAfter + 20*time.Millisecond)
	if c3, _ := get(t, p, accepted); c3 != c2 {
		t.Error("a live idle connection was not reused")
	}
}

func TestReusedConnectionClosedBeforeResponse(t *testing.T) {
	addr, accepted := tcpServer(t)
	p := testPool(t, addr, Options{MaxIdle: 4, IdleTimeout: time.Minute})
	c, srv := get(t, p, accepted)
	finish(c)
	_ = srv.Close()
	// Reused at once, before the idle check would look: the request goes
	// out and the response never comes.
	c, _ = get(t, p, accepted)
	_ = c.Send([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := c.ReadHead(false); err != ErrNoResponse {
		t.Errorf("got %v, want ErrNoResponse", err)
	}

	// Once an interim response came, a close is no longer "no response":
	// the request reached the backend.
	c, srv = get(t, p, accepted)
	c.reused = true // as if taken from the pool
	_, _ = srv.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	_ = srv.Close()
	if h, err := c.ReadHead(false); err != nil || h.Status != 100 {
		t.Fatalf("got %v, %v; want the 100", h, err)
	}
	if _, err := c.ReadHead(false); err == nil || err == ErrNoResponse {
		t.Errorf("close after a 100: got %v, want an error other than ErrNoResponse", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// An abort from another goroutine (the client left) must win over a
// deadline the exchange sets or clears afterwards.
func TestAbortIsNotUndoneByDeadlines(t *testing.T) {
	addr, accepted := tcpServer(t)
	p := testPool(t, addr, Options{MaxIdle: 4})
	c, _ := get(t, p, accepted)
	c.Abort()
	_ = c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.ReadHead(false)
		done <- err
	}()
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Errorf("read after abort: %v, want a timeout", err)
		}
	case <-time.After(time.Second):
		c.Close()
		t.Fatal("a cleared deadline undid the abort: the read blocks")
	}
	c.body.done = true
	c.Release(true)
	if p.Idle() != 0 {
		t.Error("an aborted connection went back to the pool")
	}
}
