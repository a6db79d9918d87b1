package proxy

import (
	"net/http"
	"time"
)

// Once a request's headers are in, the servers put no bound on how slowly the
// client sends its body or reads the response: a client can hold a
// connection, and a backend connection behind it, forever. The request body
// gets a deadline per read from clientBody (body.go); the response gets one
// per write from deadlineWriter. Each is renewed per operation, so transfers
// of any length pass as long as they keep moving (nginx's
// client_body_timeout and send_timeout).
//
// A write deadline is renewed only once it is older than deadlineSlack: a
// deadline costs a timer update, and a response may be written in many
// small pieces. On HTTP/1 the deadline outlives the request, so a busy
// connection renews it once per slack, not once per request.

// deadliner is what both HTTP/1 and HTTP/2 response writers offer.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// deadlineSlack is how stale a write deadline may get before it is renewed:
// a stalled client is cut off between send_timeout minus this and
// send_timeout after its last progress.
func deadlineSlack(timeout time.Duration) int64 { return int64(min(time.Second, timeout/4)) }

type deadlineWriter struct {
	http.ResponseWriter
	d         deadliner
	timeout   time.Duration
	set       int64 // the deadline in force, in Unix nanoseconds; 0 before the first write
	inherited bool  // set is an earlier request's, not yet claimed for this one
}

// init makes dw guard w with send_timeout.
func (dw *deadlineWriter) init(w http.ResponseWriter, d deadliner, timeout time.Duration) {
	dw.ResponseWriter, dw.d, dw.timeout = w, d, timeout
	if c, ok := d.(interface{ WriteDeadline() time.Time }); ok {
		// Portico's HTTP/1 server keeps a write deadline from one request
		// to the next, so one set by an earlier request may do.
		if t := c.WriteDeadline(); !t.IsZero() {
			dw.set, dw.inherited = t.UnixNano(), true
		}
	}
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	now := time.Now().UnixNano()
	if w.set-now < int64(w.timeout)-deadlineSlack(w.timeout) {
		w.set, w.inherited = now+int64(w.timeout), false
		_ = w.d.SetWriteDeadline(time.Unix(0, w.set))
	} else if w.inherited {
		// Setting the deadline in force claims it for this request (the
		// server would clear it otherwise) and moves no timer.
		w.inherited = false
		_ = w.d.SetWriteDeadline(time.Unix(0, w.set))
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
