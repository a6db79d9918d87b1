package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Listener is one listening socket, kept across reloads. It accepts in a
// loop of its own and hands each connection to the Generation (an
// http.Server) now in charge of it, so that a reload that changes server
// settings starts a new server on the same socket instead of closing it:
// no connection attempt is refused or reset, and the new settings apply to
// new connections while the old server finishes its own.
type Listener struct {
	raw *net.TCPListener
	// ln is what connections are accepted from: raw, or a wrapper around it
	// (connection limits); a wrapper must pass raw's errors through.
	ln  net.Listener
	log *slog.Logger

	target   atomic.Pointer[Generation]
	start    sync.Once
	stopping atomic.Bool
	done     chan struct{} // the accept loop has ended
}

// Listen binds addr (TCP). Nothing is accepted before the first Serve.
func Listen(addr string, log *slog.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	raw := ln.(*net.TCPListener)
	return &Listener{raw: raw, ln: raw, log: log, done: make(chan struct{})}, nil
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.raw.Addr() }

// Serve puts srv in charge of the connections accepted from now on and
// returns its generation, and the one it replaces (nil at first), which
// still serves the connections it has: Retire or Drain it. srv.Handler is
// wrapped (see Generation). With srv.TLSConfig set, connections are TLS.
func (l *Listener) Serve(srv *http.Server) (g, prev *Generation) {
	// TLS is decided now: http.Server.Serve gives a plain server a
	// TLSConfig of its own for HTTP/2.
	g = &Generation{srv: srv, tls: srv.TLSConfig, next: srv.Handler, conns: make(chan net.Conn), closed: make(chan struct{}), addr: l.Addr()}
	srv.Handler = g
	go func() { _ = srv.Serve(genListener{g}) }()
	prev = l.target.Swap(g)
	l.start.Do(func() { go l.accept() })
	return g, prev
}

// Close stops accepting: connections the kernel has already completed are
// accepted and handed on first, so that none is reset, then the socket
// closes. Connections handed on stay with their generations.
func (l *Listener) Close() {
	if l.stopping.CompareAndSwap(false, true) {
		// Wakes a pending Accept; the loop then takes what is queued.
		_ = l.raw.SetDeadline(time.Now())
		l.start.Do(func() { close(l.done) }) // never served: no loop to wait for
	}
	<-l.done
	_ = l.ln.Close()
}

func (l *Listener) accept() {
	defer close(l.done)
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		switch {
		case err == nil:
			backoff = 0
			l.deliver(c)
			continue
		case l.stopping.Load():
			l.acceptQueued()
			return
		case errors.Is(err, net.ErrClosed):
			return
		}
		// Out of file descriptors and the like: back off as http.Server does.
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		l.log.Error("accept failed; retrying", "addr", l.Addr().String(), "err", err, "retry_in", backoff.String())
		time.Sleep(backoff)
	}
}

// acceptQueued takes the connections waiting in the socket's backlog, which
// closing it would reset.
func (l *Listener) acceptQueued() {
	for backlogged(l.raw) {
		_ = l.raw.SetDeadline(time.Now().Add(time.Second))
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.deliver(c)
	}
}

func (l *Listener) deliver(c net.Conn) {
	for {
		g := l.target.Load()
		select {
		case g.conns <- c:
			return
		case <-g.closed:
			if l.target.Load() == g { // no newer generation to hand it to
				_ = c.Close()
				return
			}
		}
	}
}

// Generation is one http.Server serving a Listener's connections from when
// it takes over until the next one does, and then the connections it has
// until they end. A retired generation answers every request (but an
// upgrade) with "Connection: close", which ends an HTTP/1 connection after
// the response and sends GOAWAY on HTTP/2, so clients move to the new
// generation between requests and none sees a connection closed under it.
type Generation struct {
	srv     *http.Server
	tls     *tls.Config // nil: plain
	next    http.Handler
	addr    net.Addr
	conns   chan net.Conn
	closed  chan struct{}
	once    sync.Once
	retired atomic.Bool
}

func (g *Generation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.retired.Load() && !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		w.Header().Set("Connection", "close")
	}
	g.next.ServeHTTP(w, r)
}

// Retire stops the generation taking connections and has it close the ones
// it has as their requests end. Idle ones close by the server's idle
// timeout, or at Shutdown.
func (g *Generation) Retire() {
	g.retired.Store(true)
	g.once.Do(func() { close(g.closed) })
}

// Shutdown stops the server gracefully (http.Server.Shutdown): idle
// connections close at once, HTTP/2 clients get GOAWAY, and it returns when
// the requests running have finished or ctx ends.
func (g *Generation) Shutdown(ctx context.Context) error {
	g.Retire()
	return g.srv.Shutdown(ctx)
}

// Close closes every connection of the generation at once.
func (g *Generation) Close() error {
	g.Retire()
	return g.srv.Close()
}

// genListener is a Generation as the net.Listener its server serves.
type genListener struct{ g *Generation }

func (l genListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.g.conns:
		if l.g.tls != nil {
			return tls.Server(c, l.g.tls), nil
		}
		return c, nil
	case <-l.g.closed:
		return nil, net.ErrClosed
	}
}

func (l genListener) Close() error {
	l.g.once.Do(func() { close(l.g.closed) })
	return nil
}

func (l genListener) Addr() net.Addr { return l.g.addr }
