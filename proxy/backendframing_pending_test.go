//go:build pending

package proxy

import "testing"

// Backend framing that http.Transport cannot catch: it frames a response
// carrying both Content-Length and Transfer-Encoding by the latter and drops
// the former without a word to its caller, so the proxy relays the response
// and reuses the connection, whose next response may then be read from the
// middle of this one. Portico's own HTTP/1.1 transport (issue 11) must answer
// 502 and drop the connection. Run with:
//
//	go test -tags pending -run TestBadBackendFramingPending ./proxy/
func TestBadBackendFramingPending(t *testing.T) {
	runBackendFraming(t, "", []backendFramingCase{
		{name: "Content-Length and Transfer-Encoding",
			response: rawResponse{text: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}},
	})
}
