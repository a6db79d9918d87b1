package proxy

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/portico/portico/reqinfo"
)

// clientBody is the one wrapper a client's request body gets on its way to
// a backend; one allocation does everything the request path needs of it:
//
//   - client_body_timeout: each read gets its own deadline, renewed per read,
//     so uploads of any length pass while they move (nginx's
//     client_body_timeout). Once the body is complete the deadline is
//     cleared: left set, it would fire in the server's background read and
//     cancel the request while the backend is still answering. After a
//     timeout it stays expired, so the server drops the connection rather
//     than wait to discard the rest.
//   - max_body_bytes on a body of unknown length (chunked, HTTP/2): reading
//     past it fails the body.
//   - the outcome, for everyone who must tell a client's fault from a
//     backend's: whether the transport started reading (a retry must not
//     resend a consumed body), whether it read to the end (if not, the
//     client connection cannot be reused), and the client's error, if any:
//     a body that broke its framing or ended early is 400, a stalled one
//     408, an oversized one 413. Such a failure is answered with that
//     status, never 502, and says nothing about the backend.
//   - the bytes read, for the request record, and a bound on how long the
//     server reads what is left of an unused body (finish).
//
// The transport reads it on its own goroutine while the handler looks at
// the outcome, so the outcome is atomic. Close does nothing: the transport
// closes a body when an attempt fails, a retry still needs it, and the
// server closes the inbound body itself when the handler returns.
type clientBody struct {
	rc      io.ReadCloser
	d       deadliner // nil: no client_body_timeout
	timeout time.Duration
	left    int64         // bytes of Content-Length still expected; -1: unknown
	room    int64         // bytes max_body_bytes still allows; -1: no limit to check
	n       atomic.Int64  // bytes read
	state   atomic.Uint32 // bodyRead | bodyDone | failed status << statusShift
}

const (
	bodyRead    = 1 << iota // the transport started reading
	bodyDone                // read to the end
	bodyStopped             // no longer wanted: see stop
	statusShift = 8
)

// errBodyTooLarge is the read error of a body that went past max_body_bytes.
var errBodyTooLarge = errors.New("request body larger than max_body_bytes")

// init makes b wrap r's body. d may be nil, or timeout zero, to leave the
// timeout off.
func (b *clientBody) init(r *http.Request, d deadliner, timeout time.Duration) {
	b.rc, b.left, b.room = r.Body, r.ContentLength, -1
	if d != nil && timeout > 0 {
		b.d, b.timeout = d, timeout
	}
}

// limit applies max_body_bytes to a body of unknown length; a known
// Content-Length has been checked against it already.
func (b *clientBody) limit(maxBytes int64) {
	if b.left < 0 {
		b.room = maxBytes
	}
}

// finish records the body's size in the request record and, if the body was
// not read to its end (refused, unrouted, answered before it was read),
// bounds how long the server goes on reading the rest after the handler
// (HTTP/1: up to 256 KiB), so that a client that never sends it cannot hold
// the connection.
func (b *clientBody) finish(d deadliner, info *reqinfo.Info) {
	info.BytesIn = b.n.Load()
	if !b.done() && d != nil {
		_ = d.SetReadDeadline(time.Now().Add(drainTimeout))
	}
}

// drainTimeout is how long the server may go on reading a request body that
// was not used before the connection closes. Reading it rather than closing
// at once keeps the client's kernel from resetting the connection before the
// client has read the answer.
const drainTimeout = 500 * time.Millisecond

func (b *clientBody) Read(p []byte) (int, error) {
	if b.state.Load()&bodyRead == 0 {
		b.state.Or(bodyRead)
	}
	if b.room >= 0 && int64(len(p)) > b.room {
		p = p[:b.room+1] // one byte past the limit tells that it is exceeded
	}
	if b.d != nil {
		_ = b.d.SetReadDeadline(time.Now().Add(b.timeout))
		if b.state.Load()&bodyStopped != 0 {
			_ = b.d.SetReadDeadline(time.Now()) // never undo stop's
		}
	}
	n, err := b.rc.Read(p)
	if b.room >= 0 {
		if int64(n) > b.room {
			n = int(b.room)
			b.n.Add(int64(n))
			b.fail(http.StatusRequestEntityTooLarge)
			return n, errBodyTooLarge
		}
		b.room -= int64(n)
	}
	b.n.Add(int64(n))
	if b.left >= 0 {
		b.left -= int64(n)
	}
	switch {
	case err == io.EOF || (err == nil && b.left == 0):
		if b.d != nil {
			_ = b.d.SetReadDeadline(time.Time{})
		}
		b.state.Or(bodyDone)
	case err != nil && b.state.Load()&bodyStopped == 0:
		b.fail(bodyErrorStatus(err))
	}
	return n, err
}

// stop makes a read of the body in progress, and any later one, fail at
// once, through d (the client's connection or stream): the body is no
// longer wanted, since the backend answered or failed without it, and
// the client may hold the rest back until it has the answer. Such a
// failure is not the client's.
func (b *clientBody) stop(d deadliner) {
	b.state.Or(bodyStopped)
	_ = d.SetReadDeadline(time.Now())
}

// bodyErrorStatus is the status for a client body that failed with err:
// 408 when it stalled, else 400 (broken chunking, a short body, a broken
// trailer, a reset connection).
func bodyErrorStatus(err error) int {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

// fail records the client's error; the first one stands.
func (b *clientBody) fail(status int) {
	for {
		s := b.state.Load()
		if s>>statusShift != 0 || b.state.CompareAndSwap(s, s|uint32(status)<<statusShift) {
			return
		}
	}
}

func (b *clientBody) Close() error { return nil }

// read reports whether the transport started reading the body.
func (b *clientBody) read() bool { return b.state.Load()&bodyRead != 0 }

// done reports whether the body was read to its end.
func (b *clientBody) done() bool { return b.state.Load()&bodyDone != 0 }

// failed returns the status of the client's body error, or 0.
func (b *clientBody) failed() int { return int(b.state.Load() >> statusShift) }

// bodyOf returns the request body as Handler wrapped it, or nil.
func bodyOf(r *http.Request) *clientBody {
	b, _ := r.Body.(*clientBody)
	return b
}
