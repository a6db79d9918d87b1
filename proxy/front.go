package proxy

import (
	"net/http"

	"github.com/portico/portico/proxy/h1"
)

// What every request on a client listener passes before it is routed,
// beyond the framing rules of RFC 9112 that Portico's HTTP/1.1 server
// (package h1) enforces as it parses: the size limits, and the rules
// HTTP/2's server leaves to its user. The framing rules (conflicting
// Content-Length values, Content-Length with Transfer-Encoding,
// whitespace before a colon, Transfer-Encoding other than "chunked",
// obsolete line folding, control characters in values, HTTP/0.9, a
// missing or repeated Host, max_header_bytes) are pinned by tests in
// smuggling_test.go.

// maxRequestURI is the longest request-target accepted; longer ones get
// 414. nginx's default buffer for a request line is 8 KiB too.
const maxRequestURI = 8 << 10

// connClose is shared by every response that must close its connection:
// the servers never modify header values in place, and the capacity of one
// makes any Add copy.
var connClose = []string{"close"}[:1:1]

// overLimit returns the status for a request beyond the server's limits on
// its request-target and header fields, or with a method that is no token,
// or 0. Portico's HTTP/1 server refuses such a method in a request line,
// but x/net's HTTP/2 server takes any :method without control characters: one with a
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
