package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/portico/portico/proxy/h1"
)

// outbound is what a request sends to the backend, worked out once for all
// of its attempts. The inbound request is never modified: the access log
// and anything else that reads it after the forwarder sees what the client
// sent.
type outbound struct {
	r *http.Request
	// The request target after strip_prefix: path escaped, upath and
	// rawPath as url.URL has them, and the query, re-encoded when it is one
	// that backends could parse differently, as ReverseProxy does.
	path, upath, rawPath, query string
	// upgrade is the protocol the client asks to switch to, "" if none.
	upgrade    string
	teTrailers bool
	peer       string // the client's address, without port
	trusted    bool   // the peer is a trusted proxy
	isHEAD     bool

	// The body: length is -1 when unknown (sent chunked). small holds a
	// body of at most smallBody bytes read before the first attempt, sent
	// with the head in one write and replayable on any attempt; otherwise
	// body streams it once. cb is the body as Handler wrapped it, which
	// knows whether it was read, to its end, or failed; nil if it was not.
	length int64
	small  *[smallBody]byte
	body   io.Reader
	cb     *clientBody
	expect bool // Expect: 100-continue
	// pending is the sender of a failed attempt, still reading the
	// client's body: forwarder.ServeHTTP stops it once the failure is
	// answered.
	pending *bodySender
}

// smallBody is the largest request body read whole before the backend is
// chosen (nginx buffers every body by default; Portico only small ones, so
// that uploads stream).
const smallBody = 16 << 10

var smallBodies = newBufPool[[smallBody]byte]()

// errInvalidUpgrade is an Upgrade header that is no protocol name.
var errInvalidUpgrade = errors.New("client asked to switch to an invalid protocol")

// newOutbound prepares req's outbound form for route rt.
func newOutbound(o *outbound, req *http.Request, rt *route) error {
	*o = outbound{r: req, length: req.ContentLength, isHEAD: req.Method == http.MethodHead}
	o.setTarget(req.URL, rt)
	if conn := req.Header["Connection"]; len(conn) > 0 && httpguts.HeaderValuesContainsToken(conn, "upgrade") {
		up := req.Header.Get("Upgrade")
		switch {
		case httpguts.HeaderValuesContainsToken(req.Header["Upgrade"], "h2c"):
			// Never passed on: a backend that accepted it would give the
			// client a raw HTTP/2 connection past the proxy ("h2c smuggling").
			// The request goes on as plain HTTP/1.1.
		case !printable(up):
			return errInvalidUpgrade
		default:
			o.upgrade = up
		}
	}
	o.teTrailers = httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers")
	o.peer = peerAddr(req.RemoteAddr)
	// Handler found whether the peer is a trusted proxy when it resolved
	// the client's address.
	o.trusted = infoFrom(req).TrustedPeer

	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		o.length = 0
		return nil
	}
	o.cb = bodyOf(req)
	o.expect = httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
	if o.length > 0 && o.length <= smallBody && !o.expect {
		o.small = smallBodies.get()
		if _, err := io.ReadFull(req.Body, o.small[:o.length]); err != nil {
			o.release()
			return &h1.SrcError{Err: err}
		}
		return nil
	}
	o.body = req.Body
	return nil
}

// release returns the pooled small body.
func (o *outbound) release() {
	if o.small != nil {
		smallBodies.put(o.small)
		o.small = nil
	}
}

// hasBody reports whether a body is sent.
func (o *outbound) hasBody() bool { return o.length != 0 }

// replayable reports whether the body can still be sent to another backend:
// there is none, it is held in full, or its reading has not started (a body
// Handler did not wrap counts as started).
func (o *outbound) replayable() bool { return o.body == nil || o.cb != nil && !o.cb.read() }

// bodyUnfinished reports an HTTP/1 client body not read to its end, after
// which the client connection must close: the rest is still on its way, or
// its framing broke.
func (o *outbound) bodyUnfinished() bool {
	return o.r.ProtoMajor == 1 && o.cb != nil && !o.cb.done()
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// peerAddr is the IP of a RemoteAddr ("ip:port").
func peerAddr(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// setTarget works out the request target, with the route's prefix
// stripped when it says so.
func (o *outbound) setTarget(in *url.URL, rt *route) {
	u := *in
	if rt.strip {
		stripPrefix(&u, rt.prefix)
	}
	o.path = u.EscapedPath()
	if o.path == "" {
		o.path = "/"
	}
	o.upath, o.rawPath, o.query = u.Path, u.RawPath, cleanQuery(u.RawQuery)
}

// cleanQuery re-encodes a query that backends could split differently from
// Go (";" separators, bad escapes), as ReverseProxy does, and escapes
// spaces, which an HTTP/2 request may carry in its :path but would split an
// HTTP/1.1 request line; nearly every query is returned as it is.
func cleanQuery(q string) string {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ' ':
			return cleanQuery(strings.ReplaceAll(q, " ", "%20"))
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 2
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// forwardable reports whether the inbound header k goes to the backend as
// it is. Hop-by-hop headers (and those Connection names) concern only the
// client's connection; framing is the proxy's own; X-Forwarded-* and
// Forwarded are rewritten; from an untrusted peer, X-Real-IP and
// underscore lookalikes of the forwarding headers, which some backends
// believe, are dropped.
func (o *outbound) forwardable(k string, conn []string) bool {
	switch k {
	case "Host", "Content-Length", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded":
		return false
	case "X-Real-Ip":
		return o.trusted
	}
	if h1.IsHopByHop(k) {
		return false
	}
	if !o.trusted && strings.IndexByte(k, '_') >= 0 && forwardedLookalike(k) {
		return false
	}
	return len(conn) == 0 || !httpguts.HeaderValuesContainsToken(conn, k)
}

// forwardedLookalike: "X_Forwarded_For" and the like, which some backends
// (CGI, PHP, nginx with underscores_in_headers) read as X-Forwarded-For: an
// untrusted client could smuggle a forged address in them.
func forwardedLookalike(k string) bool {
	switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
	case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded":
		return true
	}
	return false
}

// forwardedFor is a trusted peer's X-Forwarded-For chain, to which the
// peer is appended; from anyone else, nothing.
func (o *outbound) forwardedFor() []string { return o.forwardedKept("X-Forwarded-For") }

// forwardedKept returns a trusted peer's own value of X-Forwarded-For,
// X-Forwarded-Proto, X-Forwarded-Host or Forwarded, which is passed on,
// unless the peer named it in Connection: then it was meant for that hop
// only.
func (o *outbound) forwardedKept(k string) []string {
	if !o.trusted {
		return nil
	}
	vs := o.r.Header[k]
	if conn := o.r.Header["Connection"]; len(vs) > 0 && len(conn) > 0 && httpguts.HeaderValuesContainsToken(conn, k) {
		return nil
	}
	return vs
}

func (o *outbound) proto() string {
	if o.r.TLS != nil {
		return "https"
	}
	return "http"
}

// appendHead appends the HTTP/1.1 request head for backendHost. An invalid
// header name or value (set by code, since the server validated the
// client's) fails the request rather than reach the backend.
func (o *outbound) appendHead(b []byte, backendHost string) ([]byte, error) {
	r := o.r
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, o.path...)
	if o.query != "" {
		b = append(b, '?')
		b = append(b, o.query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if r.Host != "" {
		b = append(b, r.Host...)
	} else {
		b = append(b, backendHost...)
	}
	b = append(b, "\r\n"...)
	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if !o.forwardable(k, conn) {
			continue
		}
		if !h1.ValidFieldName(k) {
			return b, errInvalidHeader
		}
		for _, v := range vs {
			if !h1.ValidFieldValue(v) {
				return b, errInvalidHeader
			}
			b = appendField(b, k, v)
		}
	}

	b = append(b, "X-Forwarded-For: "...)
	for _, v := range o.forwardedFor() {
		b = append(append(b, v...), ", "...)
	}
	b = append(append(b, o.peer...), "\r\n"...)
	if vs := o.forwardedKept("X-Forwarded-Proto"); len(vs) > 0 {
		b = appendFields(b, "X-Forwarded-Proto", vs)
	} else {
		b = appendField(b, "X-Forwarded-Proto", o.proto())
	}
	if vs := o.forwardedKept("X-Forwarded-Host"); len(vs) > 0 {
		b = appendFields(b, "X-Forwarded-Host", vs)
	} else {
		b = appendField(b, "X-Forwarded-Host", r.Host)
	}
	b = appendFields(b, "Forwarded", o.forwardedKept("Forwarded"))
	if o.teTrailers {
		b = append(b, "Te: trailers\r\n"...)
	}
	if o.upgrade != "" {
		b = append(b, "Connection: Upgrade\r\n"...)
		b = appendField(b, "Upgrade", o.upgrade)
	}
	switch {
	case o.length > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, o.length, 10)
		b = append(b, "\r\n"...)
	case o.length < 0:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(r.Trailer) > 0 {
			b = append(b, "Trailer: "...)
			first := true
			for k := range r.Trailer {
				if !first {
					b = append(b, ", "...)
				}
				b, first = append(b, k...), false
			}
			b = append(b, "\r\n"...)
		}
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		// As net/http sends it: many servers want a length on a POST.
		b = append(b, "Content-Length: 0\r\n"...)
	}
	return append(b, "\r\n"...), nil
}

var errInvalidHeader = errors.New("invalid header field in request to backend")

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

func appendFields(b []byte, k string, vs []string) []byte {
	for _, v := range vs {
		b = appendField(b, k, v)
	}
	return b
}

// header returns the outbound header map, for backends reached through
// net/http's transports (HTTP/2): the same fields appendHead writes.
func (o *outbound) header() http.Header {
	r := o.r
	h := make(http.Header, len(r.Header)+4)
	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if o.forwardable(k, conn) {
			h[k] = vs
		}
	}
	xff := o.peer
	if prior := o.forwardedFor(); len(prior) > 0 {
		xff = strings.Join(prior, ", ") + ", " + xff
	}
	h["X-Forwarded-For"] = []string{xff}
	h["X-Forwarded-Proto"] = []string{o.proto()}
	h["X-Forwarded-Host"] = []string{r.Host}
	for _, k := range [...]string{"X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
		if vs := o.forwardedKept(k); len(vs) > 0 {
			h[k] = vs
		}
	}
	if o.teTrailers {
		h["Te"] = []string{"trailers"}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // no Go default
	}
	return h
}
