package proxy

import (
	"net/http"

	"github.com/portico/portico/proxy/h1"
)

// What every request on a client listener passes before it is routed:
// the framing rules of RFC 9112 that net/http leaves to its user, and the
// size limits. The rules net/http enforces itself (conflicting
// Content-Length values, whitespace before a colon, Transfer-Encoding other
// than "chunked", control characters in values, HTTP/0.9, a missing Host,
// max_header_bytes) are pinned by tests in smuggling_test.go.

// maxRequestURI is the longest request-target accepted; longer ones get
// 414. nginx's default buffer for a request line is 8 KiB too.
const maxRequestURI = 8 << 10

// connClose is shared by every response that must close its connection:
// net/http never modifies header values in place, and the capacity of one
// makes any Add copy.
var connClose = []string{"close"}[:1:1]

// closeAmbiguousFraming closes the connection after any HTTP/1.x request
// whose framing another HTTP hop may have read differently, so that the
// bytes after it are never read as a next request (request smuggling,
// RFC 9112 §6.1 and §11.2):
//
//   - a chunked request, which may also have carried a Content-Length that a
//     hop in front framed it by: net/http deletes that Content-Length before
//     any handler runs, so Portico cannot tell, and closes after every
//     chunked request (browsers never send one);
//   - an HTTP/1.0 request: net/http deletes an HTTP/1.0 request's
//     Transfer-Encoding and frames it by Content-Length alone, where the RFC
//     requires closing after it; as Portico cannot see it, HTTP/1.0
//     connections are not kept alive.
//
// "Connection: close" on the response makes net/http close the connection
// once it is sent, for any handler behind the listener.
func closeAmbiguousFraming(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && (r.ProtoMinor == 0 || len(r.TransferEncoding) > 0) {
			w.Header()["Connection"] = connClose
		}
		next.ServeHTTP(w, r)
	})
}

// overLimit returns the status for a request beyond the server's limits on
// its request-target and header fields, or with a method that is no token,
// or 0. net/http refuses such a method in an HTTP/1 request line, but its
// HTTP/2 server takes any :method without control characters: one with a
// space would add a second request-target to the line a backend reads.
func (s *Snapshot) overLimit(r *http.Request) int {
	if len(r.RequestURI) > maxRequestURI {
		return http.StatusRequestURITooLong
	}
	if r.ProtoMajor != 1 && !h1.ValidFieldName(r.Method) {
		return http.StatusBadRequest
	}
	n := 0
	for _, vs := range r.Header {
		n += len(vs)
	}
	if n > s.maxHeaderCount {
		return http.StatusRequestHeaderFieldsTooLarge
	}
	return 0
}

// refuse answers a request that is not forwarded with a short status text
// and, over HTTP/1.x, closes the connection: the request's body is left
// unread, or its framing is broken.
func refuse(w http.ResponseWriter, r *http.Request, status int) {
	if r.ProtoMajor == 1 {
		w.Header()["Connection"] = connClose
	}
	writeError(w, status)
}
