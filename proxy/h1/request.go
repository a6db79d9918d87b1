package h1

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// Errors of a malformed request head, each answered with its status and
// the connection closed (requestErrorStatus).
var (
	errRequestLine = errors.New("h1: malformed request line")
	errVersion     = errors.New("h1: unsupported HTTP version")
	errHost        = errors.New("h1: missing, repeated or malformed Host")
	errExpect      = errors.New("h1: unsupported Expect")
	errTarget      = errors.New("h1: malformed request-target")
)

// requestErrorStatus is the status a request head that failed with err
// gets: RFC 9112 and 9110 say which, and net/http answers the same.
func requestErrorStatus(err error) int {
	switch err {
	case ErrHeadTooLarge:
		return http.StatusRequestHeaderFieldsTooLarge
	case errTE:
		return http.StatusNotImplemented
	case errVersion:
		return http.StatusHTTPVersionNotSupported
	case errExpect:
		return http.StatusExpectationFailed
	}
	return http.StatusBadRequest
}

// parseRequestHead parses s, a complete request head (request line, fields,
// and the empty line that ends them), into h. fields is the slice to reuse
// for h.Fields. Obsolete line folding is refused (RFC 9112 §5.2 allows
// that or replacing it; refusing leaves no field another hop could read
// differently), as are both Transfer-Encoding and Content-Length.
func parseRequestHead(s string, h *Head, fields []Field) error {
	*h = Head{ContentLength: -1, Fields: fields[:0], Trailer: h.Trailer[:0]}
	line, rest := nextLine(s)
	if err := parseRequestLine(line, h); err != nil {
		return err
	}
	var err error
	if h.Fields, err = parseFields(rest, h.Fields); err != nil {
		return err
	}
	return h.frame(h.Minor)
}

// parseRequestLine reads "METHOD SP request-target SP HTTP/1.x".
func parseRequestLine(line string, h *Head) error {
	method, rest, ok := strings.Cut(line, " ")
	if !ok || !ValidFieldName(method) {
		return errRequestLine
	}
	target, proto, ok := strings.Cut(rest, " ")
	if !ok || target == "" {
		return errRequestLine
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return errRequestLine
		}
	}
	if len(proto) != 8 || proto[:5] != "HTTP/" || proto[6] != '.' || !isDigit(proto[5]) || !isDigit(proto[7]) {
		return errRequestLine
	}
	h.Method, h.Target = method, target
	if proto[5] != '1' || proto[7] > '1' {
		return errVersion // "PRI * HTTP/2.0" too: the caller looks at it
	}
	h.Minor = int(proto[7] - '0')
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// requestSpace is what a connection's requests reuse, one after the
// other, beside the http.Request itself: the URL of a plain target, the
// header map and the slice its values share. A map grown past
// maxKeptFields is not kept, so that one large request does not make
// every later one clear a large map.
type requestSpace struct {
	url    url.URL
	header http.Header
	values []string
}

const maxKeptFields = 32

// newRequest makes r the http.Request for a parsed head, with context ctx,
// in sp's space: the header map shares one slice of values, Host leaves
// the map for r.Host as in net/http, and Transfer-Encoding for
// r.TransferEncoding.
func newRequest(h *Head, r *http.Request, ctx context.Context, sp *requestSpace) (bool, error) {
	*r = http.Request{
		Method: h.Method, RequestURI: h.Target,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: h.Minor,
		ContentLength: max(h.ContentLength, 0),
		Close:         h.Close,
	}
	// WithContext is the only way to give a request its context; its copy
	// stays on the stack.
	*r = *r.WithContext(ctx)
	if h.Minor == 0 {
		r.Proto = "HTTP/1.0"
	}
	var err error
	if r.URL, err = parseTarget(h.Method, h.Target, &sp.url); err != nil {
		return false, err
	}
	n := len(h.Fields)
	if sp.header == nil || len(sp.header) > maxKeptFields {
		sp.header = make(http.Header, n)
	} else {
		clear(sp.header)
	}
	if cap(sp.values) < n {
		sp.values = make([]string, max(n, 8))
	}
	r.Header = sp.header
	values := sp.values[:n]
	clear(values)
	hosts, expect := 0, false
	for i, f := range h.Fields {
		switch f.Name {
		case "Host":
			hosts++
			r.Host = f.Value
			continue
		case "Transfer-Encoding":
			continue
		case "Trailer":
			if h.Chunked {
				continue // r.Trailer has the names, as in net/http
			}
		case "Expect":
			if !strings.EqualFold(f.Value, "100-continue") {
				return false, errExpect
			}
			expect = h.Minor == 1
		}
		if vs, ok := r.Header[f.Name]; ok {
			r.Header[f.Name] = append(vs, f.Value)
		} else {
			values[i] = f.Value
			r.Header[f.Name] = values[i : i+1 : i+1]
		}
	}
	if hosts > 1 || hosts == 0 && h.Minor == 1 && h.Method != http.MethodConnect || !httpguts.ValidHostHeader(r.Host) {
		return false, errHost
	}
	if r.URL.Host != "" {
		r.Host = r.URL.Host // absolute-form wins (RFC 9112 §3.2.2)
	}
	if h.Chunked {
		r.TransferEncoding, r.ContentLength = chunked, -1
		if len(h.Trailer) > 0 {
			r.Trailer = announcedTrailer(h.Trailer)
		}
	}
	return expect, nil
}

var chunked = []string{"chunked"}[:1:1]

// announcedTrailer is r.Trailer before the body is read: the names the
// Trailer field announced, without values, as in net/http. The map is
// made now so that copies of the request (WithContext) share the values
// the body fills in.
func announcedTrailer(fields []string) http.Header {
	t := make(http.Header)
	for _, names := range fields {
		for name := range strings.SplitSeq(names, ",") {
			if name = trimOWS(name); ValidFieldName(name) {
				t[http.CanonicalHeaderKey(name)] = nil
			}
		}
	}
	return t
}

// parseTarget parses a request-target as net/http does: origin-form,
// absolute-form, "*", or a CONNECT request's authority-form. A path of
// bytes that need no escaping, with any query, is parsed into u; other
// targets get a URL of their own from url.ParseRequestURI.
func parseTarget(method, target string, u *url.URL) (*url.URL, error) {
	if path, query, ok := plainTarget(target); ok {
		*u = url.URL{Path: path, RawQuery: query, ForceQuery: query == "" && len(path) < len(target)}
		return u, nil
	}
	if method == http.MethodConnect && target[0] != '/' {
		u, err := url.ParseRequestURI("http://" + target)
		if err != nil || u.Path != "" || u.RawQuery != "" {
			return nil, errTarget
		}
		u.Scheme = ""
		return u, nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, errTarget
	}
	return u, nil
}

// plainTarget splits an origin-form target whose path has only bytes that
// url.URL keeps as they are (so Path is the path and RawPath empty) and
// whose query has no control byte or space: what url.ParseRequestURI would
// accept and make the same of, without its allocation.
func plainTarget(target string) (path, query string, ok bool) {
	if target == "" || target[0] != '/' {
		return "", "", false
	}
	path, query, _ = strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		if !pathByte[path[i]] {
			return "", "", false
		}
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c <= ' ' || c == 0x7f {
			return "", "", false
		}
	}
	return path, query, true
}

// pathByte: unreserved bytes, and the reserved ones url.URL leaves
// unescaped in a path (RFC 3986 §2.2, §2.3; net/url's shouldEscape).
var pathByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-_.~$&+,/:;=@", byte(c)) >= 0
	}
	return t
}()

// requestBody is a request's body as the handler reads it: the connection's
// Body, behind a mutex because a handler may read it on another goroutine
// while the server goes on (the handler returned), with the interim
// "100 Continue" sent before the first read that needs it, and its state
// where the response can see it without the mutex, which a read holds
// while it waits for the client.
type requestBody struct {
	mu     sync.Mutex
	c      *serverConn
	r      *http.Request
	closed bool
	eof    bool

	expect atomic.Bool  // "100 Continue" is owed before the body is read
	left   atomic.Int64 // bytes of a Content-Length body not read yet; -1: chunked
	failed atomic.Bool  // the body broke its framing, or the client failed
}

func newRequestBody(c *serverConn, r *http.Request, expect bool) *requestBody {
	b := &requestBody{c: c, r: r}
	b.expect.Store(expect)
	b.left.Store(c.conn.body.left)
	if c.conn.body.mode == bodyChunked {
		b.left.Store(-1)
	}
	return b
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	c := b.c
	if b.expect.Load() {
		if err := c.sendContinue(); err != nil {
			return 0, err
		}
		b.expect.Store(false)
	}
	c.bodyDeadline()
	body := &c.conn.body
	n, err := body.Read(p)
	if body.mode == bodyLength {
		b.left.Store(body.left)
	}
	switch {
	case err == io.EOF && !b.eof:
		b.eof = true
		b.left.Store(0)
		if len(body.Trailer) > 0 {
			b.setTrailer()
		}
		c.bodyDone()
	case err != nil && err != io.EOF:
		b.failed.Store(true)
	}
	return n, err
}

// keepsConn reports whether what is left of the body can be dropped to
// keep the connection: it was read, or the rest is short and the client is
// sending it. It may be called while another goroutine reads the body.
func (b *requestBody) keepsConn() bool {
	left := b.left.Load()
	return left == 0 || !b.failed.Load() && !b.expect.Load() && left <= maxDiscard
}

// setTrailer fills r.Trailer with the trailer fields, as net/http does once
// the body is read.
func (b *requestBody) setTrailer() {
	if b.r.Trailer == nil {
		b.r.Trailer = make(http.Header, len(b.c.conn.body.Trailer))
	}
	for _, f := range b.c.conn.body.Trailer {
		if !f.Hop {
			b.r.Trailer[f.Name] = append(b.r.Trailer[f.Name], f.Value)
		}
	}
}

// Close ends the handler's use of the body; the server reads or drops
// what is left of it.
func (b *requestBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}
