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

	"github.com/portico/portico/proxy/h1"
)

// Listener is one listening socket, kept across reloads. It accepts in a
// loop of its own and hands each connection to the Generation (a server)
// now in charge of it, so that a reload that changes server
// settings starts a new server on the same socket instead of closing it:
// no connection attempt is refused or reset, and the new settings apply to
// new connections while the old server finishes its own.
type Listener struct {
	raw *net.TCPListener
	// ln is what connections are accepted from: raw, or a wrapper around it;
	// a wrapper must pass raw's errors through.
	ln  net.Listener
	log *slog.Logger

	target   atomic.Pointer[Generation]
	conns    atomic.Pointer[ConnLimit] // nil: connections are not capped
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
// returns its generation, and the one it replaces (nil at first), which no
// longer gets connections but serves those it has: Retire it. srv.Handler
// is wrapped (see Generation). wrap, if not nil, wraps the listener srv
// serves (to count connections, say); TLS, when srv.TLSConfig is set, goes
// on top of it.
func (l *Listener) Serve(srv *http.Server, wrap func(net.Listener) net.Listener) (g, prev *Generation) {
	g = newGeneration(srv, l.Addr())
	var sl net.Listener = genListener{g}
	if wrap != nil {
		sl = wrap(sl)
	}
	if g.tls != nil {
		sl = tls.NewListener(sl, g.tls)
	}
	go func() { _ = g.h1.Serve(sl) }()
	prev = l.target.Swap(g)
	if prev != nil {
		prev.stopAccepting()
	}
	l.start.Do(func() { go l.accept() })
	return g, prev
}

// LimitConns puts the connections accepted from now on under c's caps; nil
// lifts them. The sockets of client listeners share one ConnLimit; a reload
// that moves a socket to another listener sets it again.
func (l *Listener) LimitConns(c *ConnLimit) { l.conns.Store(c) }

// Close stops accepting: connections the kernel has already completed are
// accepted and handed on first, so that none is reset, then the socket
// closes. Connections handed on stay with their generation.
func (l *Listener) Close() {
	if l.stopping.CompareAndSwap(false, true) {
		// Wakes a pending Accept; the loop then takes what is queued.
		_ = l.raw.SetDeadline(time.Now())
		l.start.Do(func() { close(l.done) }) // never served: no loop to wait for
	}
	<-l.done
	_ = l.ln.Close()
	if g := l.target.Load(); g != nil {
		g.stopAccepting()
	}
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

// deliver hands c to the generation in charge. One that stops accepting
// meanwhile has been replaced, so the loop finds the new one.
func (l *Listener) deliver(c net.Conn) {
	if cl := l.conns.Load(); cl != nil {
		if c = cl.admit(c); c == nil {
			return // over a cap: closed and counted
		}
	}
	for {
		g := l.target.Load()
		// Counted before it is handed over, so that the generation cannot
		// look empty while a connection is on its way to its server.
		g.count(1)
		select {
		case g.conns <- c:
			return
		case <-g.closed:
			g.count(-1)
			if l.target.Load() == g { // shut down, and no newer one
				_ = c.Close()
				return
			}
		}
	}
}

// Generation is one server (Portico's HTTP/1.1 server, h1.Server, with the
// settings of an http.Server, handing HTTP/2 to x/net's) serving a
// Listener's connections, from
// when it takes over until the next one does or the socket closes, and
// then the connections it has until they end. A retired generation answers
// every request (but an upgrade) with "Connection: close", which ends an
// HTTP/1 connection after the response and sends GOAWAY on HTTP/2: clients
// move to the new generation or address between requests, and none sees a
// connection closed under it. Idle connections are left to the server's
// idle timeout, as closing one races with a client that just sent on it.
type Generation struct {
	srv     *http.Server // the settings
	h1      *h1.Server   // serves them
	tls     *tls.Config  // nil: plain
	next    http.Handler
	addr    net.Addr
	conns   chan net.Conn
	closed  chan struct{} // no more connections are accepted
	once    sync.Once
	retired atomic.Bool

	mu    sync.Mutex
	open  int           // connections handed to the server, not yet closed
	empty chan struct{} // closed once it accepts no more and has none
}

func newGeneration(srv *http.Server, addr net.Addr) *Generation {
	// TLS is decided now, by the server's settings: NewTLSServer's have a
	// TLSConfig, NewServer's none.
	g := &Generation{srv: srv, tls: srv.TLSConfig, next: srv.Handler, addr: addr,
		conns: make(chan net.Conn), closed: make(chan struct{}), empty: make(chan struct{})}
	srv.Handler = g
	g.h1 = h1.NewServer(srv)
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			g.count(-1)
		}
		if hook != nil {
			hook(c, s)
		}
	}
	return g
}

func (g *Generation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		growStack() // a new goroutine per stream (stack.go)
	}
	if g.retired.Load() && !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		w.Header().Set("Connection", "close")
	}
	g.next.ServeHTTP(w, r)
}

// Retire has the generation close its connections as their requests end.
// A generation still in charge of a socket keeps serving what it accepts,
// one request per connection.
func (g *Generation) Retire() { g.retired.Store(true) }

// Done is closed once the generation no longer accepts connections and
// has none left (upgraded ones have left it).
func (g *Generation) Done() <-chan struct{} { return g.empty }

func (g *Generation) count(d int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open += d
	g.checkEmpty()
}

func (g *Generation) stopAccepting() {
	g.once.Do(func() {
		close(g.closed)
		g.mu.Lock()
		g.checkEmpty()
		g.mu.Unlock()
	})
}

func (g *Generation) checkEmpty() {
	select {
	case <-g.closed:
	default:
		return
	}
	if g.open == 0 {
		select {
		case <-g.empty:
		default:
			close(g.empty)
		}
	}
}

// Shutdown stops the server gracefully (h1.Server.Shutdown): it takes no
// more connections, idle ones close at once, HTTP/2 clients get GOAWAY, and
// it returns when the requests running have finished or ctx ends.
func (g *Generation) Shutdown(ctx context.Context) error {
	g.Retire()
	g.stopAccepting()
	return g.h1.Shutdown(ctx)
}

// Close closes every connection of the generation at once.
func (g *Generation) Close() error {
	g.Retire()
	g.stopAccepting()
	return g.h1.Close()
}

// genListener is a Generation as the net.Listener its server serves.
type genListener struct{ g *Generation }

func (l genListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.g.conns:
		return c, nil
	case <-l.g.closed:
		return nil, net.ErrClosed
	}
}

// Close is http.Server's: it stops taking connections when it shuts down.
func (l genListener) Close() error {
	l.g.stopAccepting()
	return nil
}

func (l genListener) Addr() net.Addr { return l.g.addr }
