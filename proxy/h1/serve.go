package h1

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico/portico/reqinfo"
)

// serverConn is one client connection: the reading half is a Conn (buffer,
// head parser, body framings, shared with the client side), the writing
// half the response, both reused from request to request.
type serverConn struct {
	srv    *Server
	nc     net.Conn
	conn   Conn
	tls    *tls.ConnectionState
	remote string
	state  atomic.Int32

	resp response
	body *requestBody // the current request's, nil without a body

	// The request being served, its context (cancelled when it ends or
	// the client leaves), URL and header map are reused from request to
	// request: see reqinfo.Context.
	req   http.Request
	ctx   *reqinfo.Context
	space requestSpace

	// The background read waits for the client while a handler runs, so
	// that a client that leaves cancels its request (r.Context()), and
	// then serves as the wait for the next request. It is armed when the
	// request's body is read and nothing is buffered, and starts when the
	// handler is still running watchDelay later (watch.go).
	watch      atomic.Int32 // watchOff, watchArmed or watchReading
	watchTimer *time.Timer  // runs watchFire; made on first use
	bgDone     chan struct{}
	bgN        int
	bgErr      error
	bgAbort    atomic.Bool

	// What runs when the client leaves during the handler (AfterClientGone).
	goneMu   sync.Mutex
	gone     bool   // the client left during this request
	goneFn   func() // registered, not yet run or stopped
	stopGone func() bool

	// Read deadlines (watch.go), under dmu: rd is the one in force, wait
	// what it was set to bound (waitNone: a handler's, or none), waiting
	// whether the connection waits for a request now rather than runs one.
	dmu     sync.Mutex
	rd      time.Time
	wait    uint8
	waiting bool

	wmu       sync.Mutex // orders "100 Continue" before the response
	continued bool       // a 100 went out for this request (under wmu)
	hijacked  bool
	linger    bool // the server ends the connection after a response: see end
}

const (
	connActive int32 = iota
	connIdle
	connClosing
)

// maxDiscard is how much of a body a handler left unread is read and
// dropped to keep the connection; a longer rest closes it. drainTimeout
// bounds how long that may take.
const (
	maxDiscard   = 256 << 10
	drainTimeout = 500 * time.Millisecond
)

// after returns the deadline d from now, or none for d <= 0.
func after(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return monoNow().Add(d)
}

func newServerConn(s *Server, nc net.Conn) *serverConn {
	c := &serverConn{srv: s, nc: nc, bgDone: make(chan struct{}, 1)}
	c.state.Store(connIdle) // until its first request: Shutdown may close it
	c.conn = Conn{nc: nc, maxHead: s.maxHead, buf: make([]byte, readBufSize)}
	c.conn.body.c = &c.conn
	c.resp.c = c
	c.stopGone = c.unregisterGone
	return c
}

func (c *serverConn) serve() {
	defer c.end()
	if tc, ok := c.nc.(*tls.Conn); ok {
		st, err := c.srv.handshake(tc)
		if err != nil {
			c.plainOnTLSPort(err)
			return
		}
		c.tls = st
		if p := st.NegotiatedProtocol; p != "" && p != "http/1.1" {
			if fn := c.srv.cfg.TLSNextProto[p]; fn != nil {
				c.state.Store(connActive) // HTTP/2 shuts down by GOAWAY
				fn(c.srv.cfg, tc, c.srv.handler)
			}
			return
		}
	}
	c.remote = c.nc.RemoteAddr().String()
	// ReadHeaderTimeout counts from the connection's start, as in net/http.
	c.setWaitDeadline(after(c.srv.cfg.ReadHeaderTimeout), waitHead)
	first := true
	for {
		h, err := c.readHead()
		if err == errPreface && first && c.tls == nil {
			c.serveH2C()
			return
		}
		if err != nil {
			if status := c.headErrorStatus(err); status != 0 {
				c.sendError(status)
			}
			return
		}
		first = false
		if !c.serveRequest(h) || c.hijacked {
			return
		}
	}
}

// plainOnTLSPort answers a client that spoke plain HTTP to a TLS listener,
// as net/http does, instead of closing without a word.
func (c *serverConn) plainOnTLSPort(err error) {
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
		_, _ = re.Conn.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"))
	}
}

func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// end closes the connection, unless a handler took it over.
func (c *serverConn) end() {
	c.stopBackgroundRead()
	c.srv.conns.Remove(c)
	if c.hijacked {
		return
	}
	if c.linger {
		LingerClose(c.nc, c.conn.buf, lingerTimeout)
	}
	_ = c.nc.Close()
	c.srv.connState(c.nc, http.StateClosed)
}

// sendError answers a request that could not be read with status; the
// connection then closes.
func (c *serverConn) sendError(status int) {
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	b := appendStatusLine(make([]byte, 0, 160), status)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	b = append(b, "\r\n\r\n"...)
	_, _ = c.nc.Write(append(b, text...))
	c.linger = true
}

// LingerClose reads and drops what the client still sends on nc, until
// it closes its side or timeout passes, before the caller closes nc:
// closed with unread bytes, a socket is reset, and a reset can destroy a
// response the client has not read yet. A half-close, where nc or a
// connection it wraps (NetConn) offers one, tells the client that nothing
// follows.
//
// A client that goes on sending (a large upload the backend refused) is
// read for up to maxDiscard bytes, then left to fill the socket buffers
// until the time is up, as net/http does, rather than read at its own pace.
// buf is scratch space for the reads.
func LingerClose(nc net.Conn, buf []byte, timeout time.Duration) {
	for c := nc; ; {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			break
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	until := time.Now().Add(timeout)
	_ = nc.SetReadDeadline(until)
	for n := 0; n < maxDiscard; {
		m, err := nc.Read(buf)
		if err != nil {
			return
		}
		n += m
	}
	time.Sleep(time.Until(until))
}

// lingerTimeout is how long a connection that ends after an error response
// lingers: as net/http's.
const lingerTimeout = 500 * time.Millisecond

// headErrorStatus is the status a failed head gets, or 0 when the
// connection just ends (closed, timed out, shut down) without an answer.
func (c *serverConn) headErrorStatus(err error) int {
	if err == ErrHeadTooLarge || errors.Is(err, errParse) {
		return requestErrorStatus(errors.Unwrap(err))
	}
	return 0
}

// errParse wraps a head that arrived and is malformed.
var errParse = errors.New("h1: malformed request")

// errPreface is the start of the HTTP/2 connection preface in place of a
// request: prior-knowledge h2c on a connection's first request, else 505.
var errPreface = parseError{errVersion}

type parseError struct{ err error }

func (e parseError) Error() string { return e.err.Error() }
func (e parseError) Unwrap() error { return e.err }
func (e parseError) Is(target error) bool {
	return target == errParse
}

// readHead waits for the next request head and parses it.
func (c *serverConn) readHead() (*Head, error) {
	cc := &c.conn
	for {
		for cc.r < cc.w && (cc.buf[cc.r] == '\r' || cc.buf[cc.r] == '\n') {
			cc.r++ // empty lines before a request line (RFC 9112 §2.2)
		}
		if cc.r < cc.w {
			break
		}
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
	if !c.state.CompareAndSwap(connIdle, connActive) && c.state.Load() != connActive {
		return nil, net.ErrClosed // Shutdown closed it as idle
	}
	c.srv.connState(c.nc, http.StateActive)
	if findHeadEnd(cc.buf[cc.r:cc.w], 0) == 0 {
		c.headArriving()
	}
	end, err := cc.headEnd()
	if err != nil {
		if err == ErrHeadTooLarge {
			return nil, parseError{err}
		}
		return nil, err
	}
	s := string(cc.buf[cc.r : cc.r+end])
	cc.r += end
	if err := parseRequestHead(s, &cc.head, cc.fields); err != nil {
		if err == errVersion && s == "PRI * HTTP/2.0\r\n\r\n" {
			return nil, errPreface
		}
		return nil, parseError{err}
	}
	cc.fields = cc.head.Fields
	return &cc.head, nil
}

// fill waits for more bytes from the client: the background read's, if
// one runs, else a read of its own.
func (c *serverConn) fill() error {
	if !c.disarm() {
		return c.conn.fill()
	}
	c.collectBackgroundRead()
	if c.bgN > 0 {
		return nil
	}
	return c.bgErr
}

// serveRequest runs the handler for one request and finishes its
// response; it reports whether the connection may serve another.
func (c *serverConn) serveRequest(h *Head) bool {
	// The request's record comes with its context, so that the handler
	// need not copy the request to add it.
	if c.ctx == nil || c.ctx.Watched() {
		c.ctx = new(reqinfo.Context)
	}
	c.ctx.Begin()
	r := &c.req
	expect, err := newRequest(h, r, c.ctx, &c.space)
	if err != nil {
		c.ctx.Cancel()
		c.sendError(requestErrorStatus(err))
		return false
	}
	cc := &c.conn
	cc.body.resetRequest(h)
	c.handling()
	r.RemoteAddr, r.TLS = c.remote, c.tls
	c.body, c.continued = nil, false
	c.gone, c.goneFn = false, nil
	if cc.body.done {
		r.Body = http.NoBody
		c.startBackgroundRead()
	} else {
		c.body = newRequestBody(c, r, expect)
		r.Body = c.body
	}
	c.resp.reset(r)
	c.runHandler(r)
	c.ctx.Cancel()
	if c.hijacked {
		return false
	}
	sent := c.resp.finish()
	keep := c.finishBody(sent) && sent && !c.srv.shutdown.Load()
	if keep {
		c.waitNext()
	}
	c.linger = !keep
	return keep
}

// runHandler calls the handler, recovering its panic as net/http does:
// http.ErrAbortHandler ends the connection quietly, any other panic is
// logged with its stack first.
func (c *serverConn) runHandler(r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			c.resp.abort()
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logf("h1: panic serving %v: %v\n%s", c.remote, v, buf)
			}
		}
	}()
	c.srv.handler.ServeHTTP(&c.resp, r)
}

// finishBody closes the body to the handler and settles what it left of
// it: when the connection is to be kept (keep) and the rest is short, it is
// read and dropped within drainTimeout. It reports whether the connection
// is at a message boundary.
func (c *serverConn) finishBody(keep bool) bool {
	b := c.body
	if b == nil {
		return true
	}
	if b.left.Load() != 0 {
		c.setReadDeadline(aLongTimeAgo) // a read the handler left running ends now
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	body := &c.conn.body
	if body.done {
		return true
	}
	if !keep || !b.keepsConn() {
		return false
	}
	c.setReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.CopyN(io.Discard, body, maxDiscard)
	return body.done
}

// bodyDone runs when the handler has read the body to its end.
func (c *serverConn) bodyDone() {
	if c.ctx != nil { // a body read outside a request has none to cancel
		c.startBackgroundRead()
	}
}

// sendContinue sends "100 Continue" before the first read of a body whose
// client waits for it, unless the response, or a 100 from the handler, has
// gone out already.
func (c *serverConn) sendContinue() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.resp.sent || c.continued {
		return nil
	}
	c.resp.checkWriteDeadline()
	c.continued = true
	_, err := c.nc.Write(continueLine)
	return err
}

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// hijack hands the connection to the handler, with what was read past the
// request.
func (c *serverConn) hijack() (net.Conn, *bufio.ReadWriter, error) {
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if c.resp.sent {
		return nil, nil, errors.New("h1: hijack after the response started")
	}
	c.stopBackgroundRead()
	c.setReadDeadline(time.Time{})
	c.clearWriteDeadline()
	if w := &c.resp; w.status != 0 {
		// A status set before Hijack goes out as it is, as net/http does:
		// WebSocket libraries answer 101 through WriteHeader, then hijack.
		b, _ := w.appendFields(appendStatusLine(nil, w.status))
		b = append(b, "\r\n"...)
		if _, err := c.nc.Write(b); err != nil {
			return nil, nil, err
		}
	}
	c.hijacked = true
	c.srv.conns.Remove(c) // no longer the server's to wait for or close
	c.srv.connState(c.nc, http.StateHijacked)
	cc := &c.conn
	rest := bytes.Clone(cc.buf[cc.r:cc.w])
	cc.r = cc.w
	// The reader holds what was read past the request in its buffer, as
	// net/http's does: callers look at Buffered() for it.
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(rest), c.nc), max(4096, len(rest)))
	if len(rest) > 0 {
		_, _ = br.Peek(len(rest))
	}
	return c.nc, bufio.NewReadWriter(br, bufio.NewWriter(c.nc)), nil
}

// serveH2C hands a cleartext connection that opened with the HTTP/2
// preface to the HTTP/2 server.
func (c *serverConn) serveH2C() {
	fn := c.srv.cfg.TLSNextProto["unencrypted_http2"]
	cc := &c.conn
	for fn != nil && cc.w-cc.r < len(prefaceRest) {
		if cc.fill() != nil {
			return
		}
	}
	if fn == nil || !bytes.Equal(cc.buf[cc.r:cc.r+len(prefaceRest)], prefaceRest) {
		c.sendError(http.StatusHTTPVersionNotSupported)
		return
	}
	cc.r += len(prefaceRest)
	c.state.Store(connActive)
	c.setReadDeadline(time.Time{})
	nc := &replayConn{Conn: c.nc, rest: bytes.Clone(cc.buf[cc.r:cc.w])}
	fn(c.srv.cfg, tls.Client(unencryptedConn{nc}, nil), c.srv.handler)
}

// prefaceRest is what follows "PRI * HTTP/2.0\r\n\r\n" in the HTTP/2
// connection preface.
var prefaceRest = []byte("SM\r\n\r\n")

// unencryptedConn carries a cleartext connection through the *tls.Conn
// that TLSNextProto takes, as net/http does: x/net's HTTP/2 server unwraps
// it with UnencryptedNetConn.
type unencryptedConn struct{ net.Conn }

func (u unencryptedConn) UnencryptedNetConn() net.Conn { return u.Conn }

// replayConn reads rest before the connection's own bytes.
type replayConn struct {
	net.Conn
	rest []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn lets wrappers see the connection underneath (metrics).
func (c *replayConn) NetConn() net.Conn { return c.Conn }
