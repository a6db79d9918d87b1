package proxy

import (
	"io"
	"net/http"
	"time"
)

// Once a request's headers are in, net/http puts no bound on how slowly the
// client sends its body or reads the response: a client can hold a
// connection, and a backend connection behind it, forever. These wrappers
// give each read of the body and each write of the response its own
// deadline, renewed per operation, so transfers of any length pass as long
// as they keep moving (nginx's client_body_timeout and send_timeout).

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
		w = &deadlineWriter{ResponseWriter: w, d: d, timeout: sendTimeout}
	}
	return w
}

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
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.d.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
