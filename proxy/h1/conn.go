// Package h1 is Portico's HTTP/1.1, both sides of the proxy: the client
// for backends (connections to one backend kept in a LIFO idle pool, the
// response head parser) and the server for clients (the request head
// parser, a response writer, connection management), sharing one
// connection reader and the body framings (Content-Length, chunked with
// trailers, until close) in both directions.
//
// Each side does its work on the caller's goroutine: the client writes the
// request head and reads the response from the same Conn, with no read or
// write loop goroutines and no per-request channels, which is where
// net/http's Transport spends much of a small request's time; the server
// reads a request, runs the handler and writes the response on the
// connection's goroutine, with no per-request deadline changes. What to
// send (which headers, the URI) is the caller's business; h1 only frames
// bytes, enforces the framing rules (RFC 9112) strictly, and says whether
// an exchange ended at a message boundary, the one condition under which a
// connection is used again.
package h1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is one connection to a backend, used by one exchange at a time.
type Conn struct {
	nc   net.Conn
	sock syscall.RawConn // the TCP socket under nc, for the idle check; nil if none
	pool *Pool           // nil on a server's connection
	// maxHead bounds a head, and a chunked body's trailer section.
	maxHead int

	buf  []byte // read buffer: buf[r:w] is received and not yet consumed
	r, w int
	out  []byte // the request head is built here, kept between requests

	head   Head
	fields []Field
	body   Body

	idleSince time.Time
	reused    bool
	answered  bool // the exchange received a response head
	// clean: the exchange so far left the connection at a message
	// boundary in both directions. Anything else (an error, a body not
	// read to its end, bytes the backend sent unasked) drops it.
	clean bool
	// readDeadline is the read deadline last set; it outlives the exchange
	// that set it, which is harmless only because every later one that
	// reads sets its own (or clears it) through SetReadDeadline.
	readDeadline time.Time
	aborted      atomic.Bool
	abort        func() // Abort as a func value, made once per connection
}

const (
	readBufSize = 4 << 10
	// Keep a grown write buffer between requests only up to this size: a
	// head with a small body fits, and an idle connection holds no more.
	maxKeptOut = 32 << 10
)

func newConn(nc net.Conn, p *Pool) *Conn {
	c := &Conn{nc: nc, pool: p, maxHead: p.maxHead, buf: make([]byte, readBufSize)}
	c.sock = rawSocket(nc)
	c.abort = c.Abort
	c.body.c = c
	return c
}

// NetConn is the connection itself, for an upgraded exchange that takes it
// over. Buffered returns what was already read past the response head.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Buffered returns the bytes received past what the exchange consumed;
// after a 101 they belong to the switched protocol.
func (c *Conn) Buffered() []byte { return c.buf[c.r:c.w] }

// Reused reports whether the connection served an earlier exchange.
func (c *Conn) Reused() bool { return c.reused }

// Head returns the head ReadHead read last.
func (c *Conn) Head() *Head { return &c.head }

// Body returns the reader for the body of the last head read. It is part
// of the Conn: reading it allocates nothing.
func (c *Conn) Body() *Body { return &c.body }

// Abort makes any blocked or later read or write on the connection fail at
// once. It may be called from another goroutine (the client went away); the
// connection is then not reused.
func (c *Conn) Abort() {
	c.aborted.Store(true)
	_ = c.nc.SetDeadline(aLongTimeAgo)
}

// AbortFunc is Abort as a func value, for context.AfterFunc, without an
// allocation per request.
func (c *Conn) AbortFunc() func() { return c.abort }

var aLongTimeAgo = time.Unix(1, 0)

// Close closes the connection without returning it to the pool.
func (c *Conn) Close() { _ = c.nc.Close() }

// Release ends the exchange: the connection goes back to the pool if the
// exchange ended cleanly at a message boundary and the backend did not ask
// to close, and is closed otherwise. ok is the caller's own verdict (the
// request was sent whole, nothing was aborted).
func (c *Conn) Release(ok bool) {
	if ok && c.clean && c.body.done && c.r == c.w && !c.head.Close && !c.aborted.Load() {
		c.pool.put(c)
		return
	}
	c.Close()
}

// Discard marks the exchange as unclean, so Release closes the connection.
func (c *Conn) Discard() { c.clean = false }

// OutBuffer returns an empty buffer to build a request head in; pass it,
// grown, to Send.
func (c *Conn) OutBuffer() []byte { return c.out[:0] }

// Send writes b (a request head, maybe with a small body) in one write.
func (c *Conn) Send(b []byte) error {
	if cap(b) <= maxKeptOut {
		c.out = b[:0]
	}
	if _, err := c.nc.Write(b); err != nil {
		c.clean = false
		return err
	}
	return nil
}

// SetReadDeadline bounds the wait for the response head; zero clears it.
// It never undoes an Abort, whichever of the two comes first. Setting the
// deadline already in force (clearing none) costs nothing, which a timer
// update would.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if t.Equal(c.readDeadline) {
		return nil
	}
	c.readDeadline = t
	err := c.nc.SetReadDeadline(t)
	if c.aborted.Load() {
		_ = c.nc.SetDeadline(aLongTimeAgo)
	}
	return err
}

// SetReadTimeout bounds the wait for what is read next to d from now, or
// up to d/4 (at most a second) more: a deadline set within that slack
// ago is kept rather than moved, since moving it is a timer update and a
// busy connection starts exchanges far more often than that.
func (c *Conn) SetReadTimeout(d time.Duration) error {
	now := monoNow()
	if !c.readDeadline.IsZero() && c.readDeadline.Sub(now) >= d {
		return nil
	}
	return c.SetReadDeadline(now.Add(d + min(time.Second, d/4)))
}

// ErrNoResponse is a reused connection that closed before the first byte
// of a response: most likely the backend closed it while it was idle, just
// as the request was sent, so the request may be sent again on another
// connection if it is safe to repeat.
var ErrNoResponse = errors.New("h1: connection closed before any response byte")

// WaitResponse waits until the first byte of a response arrives or the read
// deadline passes; it is how "Expect: 100-continue" waits for the backend's
// go-ahead before the body is sent. A deadline passing is an error for which
// net.Error's Timeout is true.
func (c *Conn) WaitResponse() error {
	if c.r < c.w {
		return nil
	}
	return c.fill()
}

// ReadHead reads the next response head; isHEAD says the request was HEAD,
// whose response has no body whatever its fields say. A 1xx head (other
// than 101) has no body; call ReadHead again for the next one.
func (c *Conn) ReadHead(isHEAD bool) (*Head, error) {
	end, err := c.headEnd()
	if err != nil {
		c.clean = false
		if c.reused && !c.answered && c.r == c.w && isClosed(err) {
			return nil, ErrNoResponse
		}
		return nil, err
	}
	c.answered = true
	s := string(c.buf[c.r : c.r+end])
	c.r += end
	if err := parseHead(s, &c.head, c.fields); err != nil {
		c.clean = false
		return nil, err
	}
	c.fields = c.head.Fields
	c.body.reset(&c.head, isHEAD)
	return &c.head, nil
}

func isClosed(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// headEnd buffers a whole head and returns its length, the empty line
// included.
func (c *Conn) headEnd() (int, error) {
	from := 0
	for {
		b := c.buf[c.r:c.w]
		if end := findHeadEnd(b, from); end > 0 {
			if end > c.maxHead {
				return 0, ErrHeadTooLarge
			}
			return end, nil
		}
		if len(b) > c.maxHead {
			return 0, ErrHeadTooLarge
		}
		from = max(0, len(b)-2)
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// findHeadEnd returns the length of the head at the start of b (through
// the CRLF CRLF or LF LF that ends it), or 0 while it is incomplete. from
// skips what an earlier call already searched.
func findHeadEnd(b []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// fill reads more into the buffer, compacting or growing it (up to the
// pool's head limit) when it is full.
func (c *Conn) fill() error {
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	if c.w == len(c.buf) {
		if c.r > 0 {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		} else {
			nb := make([]byte, min(2*len(c.buf), c.maxHead+readBufSize))
			if len(nb) == len(c.buf) {
				return ErrHeadTooLarge
			}
			c.w = copy(nb, c.buf[c.r:c.w])
			c.r, c.buf = 0, nb
		}
	}
	n, err := c.nc.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// line returns the next line without its LF (a CR before it is kept),
// valid until the next read; a line longer than limit is an error.
func (c *Conn) line(limit int) ([]byte, error) {
	from := 0
	for {
		b := c.buf[c.r:c.w]
		if i := bytes.IndexByte(b[from:], '\n'); i >= 0 {
			i += from
			c.r += i + 1
			return b[:i], nil
		}
		if len(b) > limit {
			return nil, errLineTooLong
		}
		from = len(b)
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
}

var errLineTooLong = errors.New("h1: line too long")

// crlf consumes the CRLF that must follow a chunk's data.
func (c *Conn) crlf() error {
	for c.w-c.r < 2 {
		if err := c.fill(); err != nil {
			return err
		}
	}
	if c.buf[c.r] != '\r' || c.buf[c.r+1] != '\n' {
		return ErrBadChunk
	}
	c.r += 2
	return nil
}

// startExchange prepares a connection taken from the pool or just dialled.
func (c *Conn) startExchange() { c.clean, c.answered = true, false }

// dialConn is Pool.dial's product: a new connection, not yet used.
func dialConn(ctx context.Context, p *Pool) (*Conn, error) {
	nc, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	c := newConn(nc, p)
	c.startExchange()
	return c, nil
}
