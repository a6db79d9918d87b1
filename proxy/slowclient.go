package proxy

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Once a request's headers are in, net/http puts no bound on how slowly the
// client sends its body or reads the response: a client can hold a
// connection, and a backend connection behind it, forever. The request body
// gets a deadline per read from clientBody (body.go); the response gets one
// per write from deadlineWriter. Each is renewed per operation, so transfers
// of any length pass as long as they keep moving (nginx's
// client_body_timeout and send_timeout).
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

type deadlineWriter struct {
	http.ResponseWriter
	d       deadliner
	timeout time.Duration
	set     *atomic.Int64 // the deadline in force: own, or the connection's
	own     atomic.Int64
}

// newDeadlineWriter guards w with send_timeout.
func newDeadlineWriter(w http.ResponseWriter, d deadliner, r *http.Request, timeout time.Duration) *deadlineWriter {
	dw := &deadlineWriter{ResponseWriter: w, d: d, timeout: timeout}
	dw.set = &dw.own
	if cc := clientConnFrom(r); cc != nil && r.ProtoMajor == 1 {
		dw.set = &cc.writeDeadline
	}
	return dw
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
