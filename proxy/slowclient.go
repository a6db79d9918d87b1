package proxy

import (
	"net/http"
	"time"
)

// Once a request's headers are in, net/http puts no bound on how slowly the
// client sends its body or reads the response: a client can hold a
// connection, and a backend connection behind it, forever. The request body
// gets a deadline per read from clientBody (body.go); the response gets one
// per write from deadlineWriter. Each is renewed per operation, so transfers
// of any length pass as long as they keep moving (nginx's
// client_body_timeout and send_timeout).

// deadliner is what both HTTP/1 and HTTP/2 response writers offer.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
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
