package h1

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Pool.
type Options struct {
	// MaxIdle is how many idle connections the pool keeps (at least 1).
	MaxIdle int
	// IdleTimeout closes connections unused for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a response head; a larger one is ErrHeadTooLarge.
	MaxHeaderBytes int
}

// DefaultMaxHeaderBytes is the head limit when Options leave it zero.
const DefaultMaxHeaderBytes = 64 << 10

// Pool holds the idle connections to one backend and dials new ones.
//
// Idle connections form a LIFO stack: the most recently used is reused
// first, so a few connections stay warm under light load and the rest age
// out. The stack has its own mutex, per backend, held for a push or a pop
// only; an atomic count lets a request skip it when the stack is empty.
type Pool struct {
	dial        func(ctx context.Context) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration
	maxHead     int

	n      atomic.Int32 // len(idle), read without the lock
	mu     sync.Mutex
	idle   []*Conn // oldest first
	closed bool
	sweep  *time.Timer // closes connections that outlive idleTimeout; nil until needed
	armed  bool
}

// NewPool returns a pool that dials with dial, which must return a
// connection ready for HTTP/1.1 (TLS already negotiated).
func NewPool(dial func(ctx context.Context) (net.Conn, error), o Options) *Pool {
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &Pool{dial: dial, maxIdle: max(o.MaxIdle, 1), idleTimeout: o.IdleTimeout, maxHead: o.MaxHeaderBytes}
}

// checkAfter: a connection idle for longer than this is checked for a close
// by the backend (a non-blocking peek, one system call) before it is
// reused. Backends close idle connections after seconds (Node's 5 s is among
// the shortest), so under load, when connections are reused within
// milliseconds, the check costs nothing; a close that races with the
// request itself is ErrNoResponse.
const checkAfter = 100 * time.Millisecond

// Get returns an idle connection, or dials a new one. A dial error is
// returned as the dial function returned it.
func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	if c := p.getIdle(); c != nil {
		return c, nil
	}
	return p.Dial(ctx)
}

// getIdle pops idle connections until one is usable.
func (p *Pool) getIdle() *Conn {
	if p.n.Load() == 0 {
		return nil
	}
	var now time.Time
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.n.Store(int32(n - 1))
		p.mu.Unlock()

		if now.IsZero() {
			now = monoNow()
		}
		idle := now.Sub(c.idleSince)
		if p.idleTimeout > 0 && idle >= p.idleTimeout {
			// Everything below it is older still.
			c.Close()
			p.closeExpired(now)
			continue
		}
		if idle >= checkAfter && !c.alive() {
			c.Close()
			continue
		}
		c.reused = true
		c.startExchange()
		return c
	}
}

// Dial always opens a new connection, as an upgrade or a retry after a
// stale one needs.
func (p *Pool) Dial(ctx context.Context) (*Conn, error) { return dialConn(ctx, p) }

// put keeps c for reuse, or closes it when the pool is full or closed.
func (p *Pool) put(c *Conn) {
	c.idleSince = monoNow()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.n.Store(int32(len(p.idle)))
	if !p.armed && p.idleTimeout > 0 {
		p.armed = true
		if p.sweep == nil {
			p.sweep = time.AfterFunc(p.idleTimeout, p.sweepExpired)
		} else {
			p.sweep.Reset(p.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// sweepExpired closes the connections that outlived the idle timeout and
// sets itself up for when the oldest of the others will.
func (p *Pool) sweepExpired() {
	now := monoNow()
	p.closeExpired(now)
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 || p.closed {
		p.armed = false
		return
	}
	p.sweep.Reset(p.idleTimeout - now.Sub(p.idle[0].idleSince))
}

// closeExpired closes the idle connections unused for idleTimeout or more:
// the oldest, at the bottom of the stack.
func (p *Pool) closeExpired(now time.Time) {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= p.idleTimeout {
		n++
	}
	expired := make([]*Conn, n)
	copy(expired, p.idle[:n])
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	p.n.Store(int32(len(p.idle)))
	p.mu.Unlock()
	for _, c := range expired {
		c.Close()
	}
}

// Idle is the number of idle connections, for tests and the admin side.
func (p *Pool) Idle() int { return int(p.n.Load()) }

// Close closes the idle connections, and each connection in use once its
// exchange ends.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.n.Store(0)
	if p.sweep != nil {
		p.sweep.Stop()
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
