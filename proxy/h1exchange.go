package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/proxy/h1"
	"github.com/portico/portico/reqinfo"
)

// h1 makes one attempt over HTTP/1.1 on the caller's goroutine. A reused
// connection that turns out to have been closed by the backend (while idle,
// most likely) is replaced by a new one, without counting as an attempt or
// against the backend: when the request could not be written at all and
// can be sent again, or when no response byte came and the request may be
// repeated (retryable).
func (f *forwarder) h1(w http.ResponseWriter, o *outbound, b *balancer.Backend, pool *h1.Pool, start time.Time, info *reqinfo.Info) error {
	ctx := o.r.Context()
	c, err := pool.Get(ctx)
	for {
		if err != nil {
			if err != errSpeaksH2 {
				f.up.failed(b, o, start, err)
			}
			return err
		}
		stop := afterClientGone(w, ctx, c.AbortFunc())
		err = f.exchange(w, o, c, b, start, info)
		aborted := !stop()
		if err == errNotSent && o.replayable() && ctx.Err() == nil ||
			errors.Is(err, h1.ErrNoResponse) && retryable(o, err) {
			c.Release(false)
			c, err = pool.Dial(ctx)
			continue
		}
		c.Release(err == nil && !aborted)
		if err != nil && err != errAborted {
			f.up.failed(b, o, start, err)
		}
		return err
	}
}

// afterClientGone is context.AfterFunc(ctx, f) for a request that w
// answers: through Portico's HTTP/1 server's cheaper hook when w (or a
// writer it wraps) offers one.
func afterClientGone(w http.ResponseWriter, ctx context.Context, f func()) (stop func() bool) {
	if n, ok := findWriter[interface{ AfterClientGone(func()) func() bool }](w); ok {
		return n.AfterClientGone(f)
	}
	return context.AfterFunc(ctx, f)
}

// findWriter returns w, or the first writer w wraps (Unwrap), that is a T.
func findWriter[T any](w http.ResponseWriter) (T, bool) {
	for {
		if t, ok := w.(T); ok {
			return t, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			var zero T
			return zero, false
		}
		w = u.Unwrap()
	}
}

// errNotSent: a reused connection failed as the request was written.
var errNotSent = errors.New("backend closed the connection before the request was sent")

// continueTimeout is how long a request with "Expect: 100-continue" waits
// for the backend's go-ahead before its body is sent anyway, as
// net/http's ExpectContinueTimeout.
const continueTimeout = time.Second

// max1xx bounds the interim responses before a final one.
const max1xx = 5

// exchange sends the request on c and relays the answer.
func (f *forwarder) exchange(w http.ResponseWriter, o *outbound, c *h1.Conn, b *balancer.Backend, start time.Time, info *reqinfo.Info) error {
	head, err := o.appendHead(c.OutBuffer(), b.URL().Host)
	if err != nil {
		c.Discard()
		return err
	}
	if o.small != nil {
		head = append(head, o.small[:o.length]...)
	}
	if err := c.Send(head); err != nil {
		if c.Reused() {
			return errNotSent
		}
		return err
	}
	rht := f.up.responseHeaderTimeout
	var (
		sender *bodySender
		h      *h1.Head
	)
	if o.body != nil {
		if o.expect {
			if h, err = f.awaitContinue(w, o, c); err != nil {
				return err
			}
		}
		if h == nil { // not refused by a final answer to Expect
			sender = startBody(c, o.body, o.length, o.r, rht)
		}
	} else if rht > 0 {
		_ = c.SetReadTimeout(rht)
	}

	if h == nil {
		h, err = f.readFinalHead(w, o, c, false)
	}
	if sender != nil {
		if err != nil {
			return sender.fail(c, o, err)
		}
		sender.headSeen(c)
	}
	if err != nil {
		return err
	}
	f.up.answered(b, h.Status, start, info)
	if h.Status == http.StatusSwitchingProtocols {
		if sender != nil {
			sender.wait(c, w, o.cb)
		}
		return f.tunnel(w, o, c, h, info)
	}
	if sender == nil && rht > 0 && !c.Body().Arrived() {
		// The body may take longer than a head may. One that has arrived
		// with its head (a small response) needs no read: the deadline
		// stays, and the connection's next exchange replaces it.
		_ = c.SetReadDeadline(time.Time{})
	}

	copyFields(w, h.Fields)
	hdr := w.Header()
	if o.bodyUnfinished() {
		hdr["Connection"] = connClose
	}
	body := c.Body()
	trailers := h.Chunked && len(h.Trailer) > 0
	if trailers {
		hdr["Trailer"] = append([]string(nil), h.Trailer...)
	}
	err = respond(w, h.Status, body, body.Length() < 0 || isEventStream(hdr), trailers)
	if sender != nil {
		sender.wait(c, w, o.cb)
	}
	if err != nil {
		return errAborted
	}
	addTrailers(hdr, body.Trailer, h.Trailer)
	return nil
}

// readFinalHead reads response heads until a final one (or 101), relaying
// interim ones to the client; with toContinue it stops after a 100.
func (f *forwarder) readFinalHead(w http.ResponseWriter, o *outbound, c *h1.Conn, toContinue bool) (*h1.Head, error) {
	for n := 0; ; n++ {
		h, err := c.ReadHead(o.isHEAD)
		if err != nil {
			return nil, err
		}
		switch {
		case h.Status == http.StatusSwitchingProtocols:
			if o.upgrade == "" || !strings.EqualFold(h.Upgrade, o.upgrade) || !printable(h.Upgrade) {
				c.Discard()
				return nil, errWrongUpgrade
			}
			return h, nil
		case h.Status >= 200:
			return h, nil
		case n == max1xx:
			c.Discard()
			return nil, errTooMany1xx
		}
		if o.r.ProtoAtLeast(1, 1) { // HTTP/1.0 has no interim responses
			relay1xx(w, h.Status, h.Fields)
		}
		if toContinue && h.Status == http.StatusContinue {
			return h, nil
		}
	}
}

var errTooMany1xx = errors.New("backend sent too many 1xx responses")

// awaitContinue waits for the backend's answer to "Expect: 100-continue":
// 100 (relayed to the client, which then sends the body), a final answer
// (returned; the body is not sent), or nothing within continueTimeout (the
// body is sent anyway).
func (f *forwarder) awaitContinue(w http.ResponseWriter, o *outbound, c *h1.Conn) (*h1.Head, error) {
	_ = c.SetReadDeadline(time.Now().Add(continueTimeout))
	err := c.WaitResponse()
	var deadline time.Time // an answer has begun: the rest of its head is due within rht
	if rht := f.up.responseHeaderTimeout; rht > 0 && err == nil {
		deadline = time.Now().Add(rht)
	}
	_ = c.SetReadDeadline(deadline)
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout() && o.r.Context().Err() == nil:
		return nil, nil
	default:
		c.Discard()
		return nil, err
	}
	h, err := f.readFinalHead(w, o, c, true)
	if err != nil {
		return nil, err
	}
	if h.Status == http.StatusContinue {
		// The final head's timeout starts once the body is sent.
		_ = c.SetReadDeadline(time.Time{})
		return nil, nil
	}
	// The body was announced and will not follow: the connection cannot
	// carry another request.
	c.Discard()
	return h, nil
}

// bodySender streams a request body to the backend on its own goroutine
// while the handler's goroutine waits for the response, so that a backend
// that answers before reading the whole body, or streams its answer while
// it reads, neither deadlocks nor loses its answer.
type bodySender struct {
	done chan error
	mu   sync.Mutex
	seen bool // the response head arrived: the sender must not set a deadline
	rht  time.Duration
}

func startBody(c *h1.Conn, body io.Reader, length int64, r *http.Request, rht time.Duration) *bodySender {
	// The response head is not due until the body is sent: a deadline the
	// connection's last exchange left must not cut the wait short.
	_ = c.SetReadDeadline(time.Time{})
	s := &bodySender{done: make(chan error, 1), rht: rht}
	// The server fills a request's trailers once its body is read to its end.
	trailer := func() http.Header { return r.Trailer }
	go func() {
		buf := copyBuffers.get()
		defer copyBuffers.put(buf)
		err := c.SendBody(body, length, buf[:], trailer)
		if errors.As(err, new(*h1.SrcError)) {
			// The client failed: unblock the response read, since the
			// backend waits for the rest of the body. A backend that
			// failed instead may well have answered, or is about to show
			// the reader its close.
			c.Abort()
		} else if err == nil && s.rht > 0 {
			// net/http starts the response header timeout once the request
			// is fully written; so does this.
			s.mu.Lock()
			if !s.seen {
				_ = c.SetReadDeadline(time.Now().Add(s.rht))
			}
			s.mu.Unlock()
		}
		s.done <- err
	}()
	return s
}

// headSeen clears the response header timeout for the body's sake.
func (s *bodySender) headSeen(c *h1.Conn) {
	s.mu.Lock()
	s.seen = true
	s.mu.Unlock()
	_ = c.SetReadDeadline(time.Time{})
}

// wait ends the sender once the response is over: a body still being sent
// is cut off by aborting the connection, which is then not reused.
func (s *bodySender) wait(c *h1.Conn, w http.ResponseWriter, cb *clientBody) {
	var err error
	select {
	case err = <-s.done:
	default:
		c.Abort()
		if err = s.stop(w, cb); err == nil {
			err = errAborted
		}
	}
	if err != nil {
		c.Discard()
	}
}

// fail ends the sender after the response failed; the sender's own error,
// if any, is the cause (a client that stopped sending its body). A sender
// still running is most likely waiting for the client's next bytes: the
// failure is answered first and the sender stopped after that (o.pending,
// forwarder.ServeHTTP), or the answer would wait for those bytes. Which of
// the two failed is then told by the client's body (clientBody.failed).
func (s *bodySender) fail(c *h1.Conn, o *outbound, err error) error {
	c.Abort()
	c.Discard()
	var serr error
	select {
	case serr = <-s.done:
	default:
		// With the client's side failed or gone, the sender is about to
		// end, and its error (recorded in o.cb) says whose fault it is.
		if o.cb != nil && o.r.Context().Err() == nil {
			o.pending = s
			return err
		}
		serr = <-s.done
	}
	if errors.As(serr, new(*h1.SrcError)) {
		return serr
	}
	return err
}

// stop ends a sender that may be waiting for the client's next bytes, which
// the client may well hold back until it has the answer (clientBody.stop).
// Handler then gives the server its short drain time for the rest of the
// body, and the response closes the connection (bodyUnfinished). Call it
// once the connection is aborted, so that the sender cannot block on the
// backend either.
func (s *bodySender) stop(w http.ResponseWriter, cb *clientBody) error {
	if cb != nil && !cb.done() {
		cb.stop(http.NewResponseController(w))
	}
	return <-s.done
}
