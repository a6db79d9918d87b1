package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico/portico/internal/connset"
)

// Server is Portico's HTTP/1.1 server: it serves the client connections of
// a listener with an http.Handler, on one goroutine per connection that
// reads a request, runs the handler and writes the response, with no
// per-request goroutine or deadline changes beyond the ones the limits need.
// It takes its settings from an http.Server, so that the rest of Portico
// (HTTP/2 set up by x/net's ConfigureServer, ConnState hooks, shutdown
// hooks) configures one as it would net/http's:
//
//   - Handler, ReadHeaderTimeout, IdleTimeout, MaxHeaderBytes, ErrorLog;
//   - ConnState, called as net/http calls it (New, Active, Idle, Hijacked,
//     Closed; connections handed to HTTP/2 skip Active and Idle);
//   - TLSNextProto: "h2" takes a TLS connection that negotiated h2 by ALPN,
//     "unencrypted_http2" a cleartext one that opens with the HTTP/2
//     preface; without the entry such connections are refused;
//   - RegisterOnShutdown hooks, run by Shutdown (x/net's HTTP/2 server sends
//     GOAWAY from one).
//
// Connections from a TLS listener (tls.NewListener) are handshaken here,
// within ReadHeaderTimeout.
type Server struct {
	cfg     *http.Server
	handler http.Handler
	maxHead int

	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	conns    connset.Set[*serverConn] // sealed by Shutdown and Close
	shutdown atomic.Bool
	wg       sync.WaitGroup // Serve loops
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// NewServer returns a server with cfg's settings; cfg must not change
// once it serves.
func NewServer(cfg *http.Server) *Server {
	maxHead := cfg.MaxHeaderBytes
	if maxHead <= 0 {
		maxHead = http.DefaultMaxHeaderBytes
	}
	h := cfg.Handler
	if h == nil {
		h = http.NotFoundHandler()
	}
	return &Server{cfg: cfg, handler: h, maxHead: maxHead, lns: map[net.Listener]struct{}{}}
}

// Serve accepts connections from ln and serves each on a goroutine of its
// own, until ln fails or the server shuts down; it closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
		_ = ln.Close()
		s.wg.Done()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("h1: accept error: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newServerConn(s, nc)
		s.connState(nc, http.StateNew)
		if !s.conns.Add(c) {
			_ = nc.Close()
			s.connState(nc, http.StateClosed)
			return ErrServerClosed
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, has the others close
// after the response in progress, runs the RegisterOnShutdown hooks, and
// waits until every connection has closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	// The hooks belong to cfg; it never served, so its Shutdown runs them
	// and returns.
	_ = s.cfg.Shutdown(ctx)
	poll := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
			poll = min(2*poll, 100*time.Millisecond)
		}
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.stop()
	s.conns.Range(func(c *serverConn) { _ = c.nc.Close() })
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	s.shutdown.Store(true)
	s.conns.Seal()
	for ln := range s.lns {
		_ = ln.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	return s.conns.Range(func(c *serverConn) {
		if c.state.CompareAndSwap(connIdle, connClosing) {
			_ = c.nc.Close()
		}
	}) == 0
}

func (s *Server) connState(nc net.Conn, st http.ConnState) {
	if hook := s.cfg.ConnState; hook != nil {
		hook(nc, st)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.ErrorLog != nil {
		s.cfg.ErrorLog.Printf(format, args...)
	}
}

// handshake completes a TLS connection's handshake within the time a
// client gets for its request head, and returns its state.
func (s *Server) handshake(tc *tls.Conn) (*tls.ConnectionState, error) {
	if d := s.cfg.ReadHeaderTimeout; d > 0 {
		_ = tc.SetDeadline(time.Now().Add(d))
	}
	if err := tc.HandshakeContext(context.Background()); err != nil {
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	return &st, nil
}
