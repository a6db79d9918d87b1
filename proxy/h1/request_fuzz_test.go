package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
)

// FuzzReadRequest reads arbitrary bytes as the server reads a request (head,
// http.Request, body) and checks it against net/http's ReadRequest, an
// independent parser: whatever Portico accepts, net/http must accept too and
// read the same way (method, target, Host, framing, fields, body). Portico
// may refuse more (Content-Length with Transfer-Encoding, obsolete line
// folding, Transfer-Encoding in HTTP/1.0); it must never accept a request
// another parser would read differently, which is how requests are
// smuggled. Seeds are in testdata/fuzz/FuzzReadRequest.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"GET http://b.test/x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
		"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
		"OPTIONS * HTTP/1.0\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: a\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 16<<10 {
			return
		}
		c := newServerConn(NewServer(&http.Server{MaxHeaderBytes: 8 << 10}), &memConn{r: bytes.NewReader(raw), step: 7})
		h, err := c.readHead()
		if err != nil {
			return
		}
		r := new(http.Request)
		if _, err := newRequest(h, r, context.Background(), new(requestSpace)); err != nil {
			return
		}
		c.conn.body.resetRequest(h)
		body, err := io.ReadAll(&requestBody{c: c, r: r})
		if err != nil {
			return // broken framing: refused before anything is forwarded whole
		}

		// net/http is not asked to skip the empty lines before a request.
		ref, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(bytes.TrimLeft(raw, "\r\n"))))
		if err != nil {
			t.Fatalf("Portico accepted a request net/http refuses (%v):\n%q", err, raw)
		}
		refBody, err := io.ReadAll(ref.Body)
		if err != nil {
			t.Fatalf("Portico read a body net/http cannot (%v):\n%q", err, raw)
		}
		if r.Method != ref.Method || r.RequestURI != ref.RequestURI || r.Host != ref.Host ||
			r.URL.String() != ref.URL.String() || r.ProtoMinor != ref.ProtoMinor {
			t.Fatalf("request line read differently: %s %s %s %q, net/http %s %s %s %q:\n%q",
				r.Method, r.RequestURI, r.URL, r.Host, ref.Method, ref.RequestURI, ref.URL, ref.Host, raw)
		}
		if r.ContentLength != ref.ContentLength || !slices.Equal(r.TransferEncoding, ref.TransferEncoding) || !bytes.Equal(body, refBody) {
			t.Fatalf("framed differently: length %d %q body %q, net/http %d %q %q:\n%q",
				r.ContentLength, r.TransferEncoding, body, ref.ContentLength, ref.TransferEncoding, refBody, raw)
		}
		for k, vs := range ref.Header {
			if k != "Host" && !slices.Equal(r.Header[k], vs) {
				t.Fatalf("field %s: %q, net/http %q:\n%q", k, r.Header[k], vs, raw)
			}
		}
		if len(r.Header) != len(ref.Header) {
			t.Fatalf("fields %q, net/http %q:\n%q", r.Header, ref.Header, raw)
		}
		for k, vs := range ref.Trailer {
			if !slices.Equal(r.Trailer[k], vs) {
				t.Fatalf("trailer %s: %q, net/http %q:\n%q", k, r.Trailer[k], vs, raw)
			}
		}
	})
}
