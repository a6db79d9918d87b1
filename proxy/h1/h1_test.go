package h1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// memConn is a connection that reads a fixed byte stream, in pieces of at
// most step bytes (to exercise reads that split a head or a chunk line), and
// records what is written to it.
type memConn struct {
	r    *bytes.Reader
	step int
	out  bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error) {
	if c.step > 0 && len(p) > c.step {
		p = p[:c.step]
	}
	return c.r.Read(p)
}
func (c *memConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// connOver returns a fresh Conn reading stream.
func connOver(t testing.TB, stream string, step int) *Conn {
	mc := &memConn{r: bytes.NewReader([]byte(stream)), step: step}
	p := NewPool(func(context.Context) (net.Conn, error) { return mc, nil }, Options{MaxIdle: 1})
	c, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readAll reads one response: its head and its whole body, with Read or,
// with peek, as the relay does: Peek and Discard what has arrived, Read the
// rest.
func readAll(c *Conn, isHEAD, peek bool) (*Head, string, error) {
	h, err := c.ReadHead(isHEAD)
	if err != nil {
		return nil, "", err
	}
	var body bytes.Buffer
	buf := make([]byte, 7) // small reads cross every boundary
	for {
		if peek {
			p, err := c.Body().Peek()
			if len(p) > 0 {
				body.Write(p)
				c.Body().Discard(len(p))
				continue
			}
			if err == io.EOF {
				return h, body.String(), nil
			}
			if err != nil {
				return h, body.String(), err
			}
		}
		n, err := c.Body().Read(buf)
		body.Write(buf[:n])
		if err == io.EOF {
			return h, body.String(), nil
		}
		if err != nil {
			return h, body.String(), err
		}
	}
}

func TestResponseFraming(t *testing.T) {
	cases := []struct {
		name     string
		response string
		isHEAD   bool
		status   int
		body     string
		reusable bool // ends at a message boundary with keep-alive
		trailer  map[string]string
	}{
		{name: "content-length", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			status: 200, body: "hello", reusable: true},
		{name: "no reason phrase", response: "HTTP/1.1 204\r\n\r\n", status: 204, reusable: true},
		{name: "bare LF line endings", response: "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", status: 200, body: "ok", reusable: true},
		{name: "same Content-Length twice", response: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", reusable: true},
		{name: "chunked with extension and trailers",
			response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\ngrpc-status: 0\r\n\r\n",
			status: 200, body: "hello world", reusable: true, trailer: map[string]string{"X-Sum": "abc", "Grpc-Status": "0"}},
		{name: "chunked, upper-case hex", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
			status: 200, body: "0123456789", reusable: true},
		{name: "until close", response: "HTTP/1.1 200 OK\r\n\r\nall of it", status: 200, body: "all of it"},
		{name: "Connection: close", response: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok"},
		{name: "HTTP/1.0 closes", response: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok"},
		{name: "HTTP/1.0 keep-alive", response: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", reusable: true},
		{name: "HEAD ignores Content-Length", response: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", isHEAD: true,
			status: 200, reusable: true},
		{name: "304 has no body", response: "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", status: 304, reusable: true},
	}
	for _, tc := range cases {
		for i, step := range []int{0, 1, 3, 0, 1, 3} {
			c := connOver(t, tc.response, step)
			h, body, err := readAll(c, tc.isHEAD, i >= 3)
			if err != nil {
				t.Errorf("%s (reads of %d): %v", tc.name, step, err)
				continue
			}
			if h.Status != tc.status || body != tc.body {
				t.Errorf("%s (reads of %d): got %d %q, want %d %q", tc.name, step, h.Status, body, tc.status, tc.body)
			}
			reusable := c.clean && c.body.done && c.r == c.w && !h.Close
			if reusable != tc.reusable {
				t.Errorf("%s (reads of %d): reusable %v, want %v", tc.name, step, reusable, tc.reusable)
			}
			got := map[string]string{}
			for _, f := range c.Body().Trailer {
				got[f.Name] = f.Value
			}
			if len(got) != len(tc.trailer) {
				t.Errorf("%s: trailers %v, want %v", tc.name, got, tc.trailer)
			}
			for k, v := range tc.trailer {
				if got[k] != v {
					t.Errorf("%s: trailer %s = %q, want %q", tc.name, k, got[k], v)
				}
			}
		}
	}
}

func TestMalformedResponses(t *testing.T) {
	big := strings.Repeat("a", DefaultMaxHeaderBytes)
	cases := []struct {
		name, response string
		want           error // nil: any error
		inBody         bool  // the head parses; the body breaks
	}{
		{name: "not HTTP", response: "SSH-2.0-OpenSSH\r\n\r\n", want: errStatusLine},
		{name: "HTTP/2 status line", response: "HTTP/2 200 OK\r\n\r\n", want: errStatusLine},
		{name: "two-digit status", response: "HTTP/1.1 20 OK\r\n\r\n", want: errStatusLine},
		{name: "status with letters", response: "HTTP/1.1 2x0 OK\r\n\r\n", want: errStatusLine},
		{name: "no space after status", response: "HTTP/1.1 200OK\r\n\r\n", want: errStatusLine},
		{name: "NUL in reason", response: "HTTP/1.1 200 O\x00K\r\n\r\n", want: errStatusLine},
		{name: "space before colon", response: "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", want: errFieldLine},
		{name: "no colon", response: "HTTP/1.1 200 OK\r\nBroken\r\n\r\n", want: errFieldLine},
		{name: "empty name", response: "HTTP/1.1 200 OK\r\n: v\r\n\r\n", want: errFieldLine},
		{name: "bare CR in value", response: "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", want: errFieldLine},
		{name: "NUL in value", response: "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", want: errFieldLine},
		{name: "obs-fold", response: "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n", want: errObsFold},
		{name: "differing Content-Length", response: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", want: errLength},
		{name: "Content-Length list", response: "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", want: errLength},
		{name: "negative Content-Length", response: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", want: errLength},
		{name: "Content-Length with sign", response: "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", want: errLength},
		{name: "huge Content-Length", response: "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", want: errLength},
		{name: "TE and CL", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n", want: errTEAndLength},
		{name: "TE gzip", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", want: errTE},
		{name: "TE gzip, chunked", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", want: errTE},
		{name: "TE twice", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", want: errTE},
		{name: "TE in HTTP/1.0", response: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: errTE10},
		{name: "header block too large", response: "HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\n\r\n", want: ErrHeadTooLarge},
		{name: "head cut short", response: "HTTP/1.1 200 OK\r\nContent-Le", want: io.EOF},
		{name: "bad chunk size", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", want: ErrBadChunk, inBody: true},
		{name: "chunk size overflow", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", want: ErrBadChunk, inBody: true},
		{name: "chunk size with space", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", want: ErrBadChunk, inBody: true},
		{name: "no CRLF after chunk data", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", want: ErrBadChunk, inBody: true},
		{name: "chunk longer than sent", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhello", want: ErrTruncated, inBody: true},
		{name: "no last chunk", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", want: ErrTruncated, inBody: true},
		{name: "body shorter than Content-Length", response: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", want: ErrTruncated, inBody: true},
		{name: "trailer obs-fold", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\r\n b\r\n\r\n", want: errObsFold, inBody: true},
	}
	for _, tc := range cases {
		c := connOver(t, tc.response, 0)
		_, err := c.ReadHead(false)
		if tc.inBody {
			if err != nil {
				t.Errorf("%s: head: %v", tc.name, err)
				continue
			}
			_, err = io.ReadAll(c.Body())
		}
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: got error %v, want %v", tc.name, err, tc.want)
		}
		if c.clean {
			t.Errorf("%s: connection still counted clean after %v", tc.name, err)
		}
	}
}

func TestHopByHopFieldsMarked(t *testing.T) {
	c := connOver(t, "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nx-private: 1\r\nKeep-Alive: timeout=5\r\n"+
		"Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\ncontent-type: text/plain\r\nX-Kept: 2\r\n\r\n0\r\n\r\n", 0)
	h, err := c.ReadHead(false)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, f := range h.Fields {
		if !f.Hop {
			kept = append(kept, f.Name+": "+f.Value)
		}
	}
	if got := strings.Join(kept, "; "); got != "Content-Type: text/plain; X-Kept: 2" {
		t.Errorf("end-to-end fields %q, want Content-Type and X-Kept, names canonical", got)
	}
	if len(h.Trailer) != 1 || h.Trailer[0] != "X-Sum" || h.Close {
		t.Errorf("Trailer %q, Close %v", h.Trailer, h.Close)
	}
}

// The ready check is what lets the relay flush exactly when the next read
// would wait: it must say "ready" only when a read will not block.
func TestBodyReady(t *testing.T) {
	// One chunk arrives, then the stream stalls (the reader would block).
	c := connOver(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n", 0)
	if _, err := c.ReadHead(false); err != nil {
		t.Fatal(err)
	}
	b := c.Body()
	if !b.Ready() {
		t.Fatal("chunk data buffered, but Ready is false")
	}
	buf := make([]byte, 64)
	if n, err := b.Read(buf); n != 6 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if b.Ready() {
		t.Error("only the chunk's CRLF is buffered, yet Ready says a read would not wait")
	}

	// A whole small chunked body: its end comes with its last data.
	c = connOver(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 0)
	if _, err := c.ReadHead(false); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Body().Read(buf); n != 2 || err != io.EOF {
		t.Errorf("read %d, %v; want 2 and io.EOF together", n, err)
	}
}

// The word-at-a-time checks agree with the rule byte by byte: every byte
// value, at every position of values up to 17 bytes long, among printable
// neighbours and among other bytes that look alike to the word test.
func TestFieldValidityByteByByte(t *testing.T) {
	valid := func(c byte) bool { return c >= ' ' && c != 0x7f || c == '\t' }
	for _, fill := range []byte{'a', ' ', 0x80, 0xff, 0x21, '\t'} {
		for n := 1; n <= 17; n++ {
			for pos := range n {
				for c := range 256 {
					b := make([]byte, n)
					for i := range b {
						b[i] = fill
					}
					b[pos] = byte(c)
					if got, want := ValidFieldValue(string(b)), valid(byte(c)); got != want {
						t.Fatalf("ValidFieldValue(%q) = %v, want %v", b, got, want)
					}
				}
			}
		}
	}
	for c := range 256 {
		name := "X-" + string(rune(c))
		if c >= 0x80 {
			name = "X-" + string([]byte{byte(c)})
		}
		want := c < 0x80 && (c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0)
		if got := ValidFieldName(name); got != want {
			t.Errorf("ValidFieldName(%q) = %v, want %v", name, got, want)
		}
		if c == ':' {
			continue // ends the name
		}
		_, err := parseField(name + ": v")
		if got := err == nil; got != want {
			t.Errorf("parseField(%q): %v, want valid %v", name+": v", err, want)
		}
	}
}

// Names come out canonical whatever the case they came in, and as given
// when they already are, sharing the line's bytes.
func TestFieldNamesCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"content-type": "Content-Type", "CONTENT-LENGTH": "Content-Length", "x-forwarded-for": "X-Forwarded-For",
		"Content-Type": "Content-Type", "X-Request-Id": "X-Request-Id", "x": "X", "Www-Authenticate": "Www-Authenticate",
		"a-B-c": "A-B-C", "Te": "Te", "TE": "Te", "foo_bar": "Foo_bar", "1-a": "1-A",
	} {
		f, err := parseField(in + ": v")
		if err != nil || f.Name != want {
			t.Errorf("parseField(%q) = %q, %v; want %q", in, f.Name, err, want)
		}
	}
}
