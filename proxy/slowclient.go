package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Once a request's headers are in, net/http puts no bound on how slowly the
// client sends its body or reads the response: a client can hold a
// connection, and a backend connection behind it, forever. These wrappers
// give each read of the body and each write of the response its own
// deadline, renewed per operation, so transfers of any length pass as long
// as they keep moving (nginx's client_body_timeout and send_timeout).
//
// A write deadline is renewed only once it is older than deadlineSlack: a
// deadline costs a timer update, and small responses come far more often
// than that on a keep-alive connection. An HTTP/1 connection keeps the
// deadline it was given across its requests (clientConn); an HTTP/2 stream
// has its own.

// deadliner is what both HTTP/1 and HTTP/2 response writers offer.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// guardSlowClient wraps the request body and the response writer; either
// timeout may be zero to leave that direction unguarded.
func guardSlowClient(w http.ResponseWriter, d deadliner, r *http.Request, bodyTimeout, sendTimeout time.Duration) http.ResponseWriter {
	if bodyTimeout > 0 && r.Body != nil && r.Body != http.NoBody {
		r.Body = &deadlineBody{ReadCloser: r.Body, d: d, timeout: bodyTimeout, left: r.ContentLength}
	}
	if sendTimeout > 0 {
		dw := &deadlineWriter{ResponseWriter: w, d: d, timeout: sendTimeout}
		dw.set = &dw.own
		if cc := clientConnFrom(r); cc != nil && r.ProtoMajor == 1 {
			dw.set = &cc.writeDeadline
		}
		w = dw
	}
	return w
}

// clientConn is what Portico keeps per client connection: the write
// deadline now in force on an HTTP/1 connection, in Unix nanoseconds.
type clientConn struct {
	writeDeadline atomic.Int64
}

type clientConnKey struct{}

// withClientConn is the servers' ConnContext: one clientConn per connection.
func withClientConn(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, clientConnKey{}, &clientConn{})
}

func clientConnFrom(r *http.Request) *clientConn {
	cc, _ := r.Context().Value(clientConnKey{}).(*clientConn)
	return cc
}

// deadlineSlack is how stale a write deadline may get before it is renewed:
// a stalled client is cut off between send_timeout minus this and
// send_timeout after its last progress.
func deadlineSlack(timeout time.Duration) int64 { return int64(min(time.Second, timeout/4)) }

// deadlineBody renews the read deadline before each read of the body. Once
// the body is complete (EOF, or all of Content-Length read, since a reader
// may stop there without asking for EOF) it clears the deadline: left set, it
// would fire in net/http's background read and cancel the request while the
// backend is still answering. After a timeout the deadline stays expired, so
// net/http drops the connection rather than wait to discard the rest.
type deadlineBody struct {
	io.ReadCloser
	d       deadliner
	timeout time.Duration
	left    int64 // bytes still expected; -1 when the length is unknown
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	_ = b.d.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	if b.left >= 0 {
		b.left -= int64(n)
	}
	if err == io.EOF || (err == nil && b.left == 0) {
		_ = b.d.SetReadDeadline(time.Time{})
	}
	return n, err
}

type deadlineWriter struct {
	http.ResponseWriter
	d       deadliner
	timeout time.Duration
	set     *atomic.Int64 // the deadline in force: own, or the connection's
	own     atomic.Int64
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	now := time.Now().UnixNano()
	if w.set.Load()-now < int64(w.timeout)-deadlineSlack(w.timeout) {
		d := now + int64(w.timeout)
		_ = w.d.SetWriteDeadline(time.Unix(0, d))
		w.set.Store(d)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
