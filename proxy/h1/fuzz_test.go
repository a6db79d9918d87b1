package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

// FuzzReadResponse feeds arbitrary bytes to the response parser, as a
// hostile or broken backend could, in reads of varying sizes. It must never
// panic, and it must never be more lenient than net/http: what it accepts,
// net/http reads the same way (status, body). What it accepts must also be
// safe to pass on: canonical field names, values without CR, LF or NUL, one
// framing.
func FuzzReadResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
	} {
		f.Add([]byte(seed), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		c := connOver(t, string(data), int(step%16))
		h, err := c.ReadHead(false)
		for err == nil && h.Status < 200 && h.Status != 101 {
			h, err = c.ReadHead(false)
		}
		if err != nil {
			return
		}
		checkHead(t, h)
		body, berr := io.ReadAll(c.Body())
		for _, tf := range c.Body().Trailer {
			checkField(t, tf)
		}
		if h.Status == 101 {
			return // the rest belongs to another protocol
		}

		// net/http must read the same response: skip the 1xx heads first.
		br := bufio.NewReader(bytes.NewReader(data))
		var res *http.Response
		for {
			res, err = http.ReadResponse(br, nil)
			if err != nil || res.StatusCode >= 200 || res.StatusCode == 101 {
				break
			}
		}
		if err != nil {
			t.Fatalf("accepted a head net/http rejects (%v): %q", err, data)
		}
		if res.StatusCode != h.Status {
			t.Fatalf("status %d, net/http %d: %q", h.Status, res.StatusCode, data)
		}
		want, werr := io.ReadAll(res.Body)
		if berr == nil && werr != nil {
			t.Fatalf("read a whole body where net/http fails (%v): %q", werr, data)
		}
		if berr == nil && !bytes.Equal(body, want) {
			t.Fatalf("body %q, net/http %q: %q", body, want, data)
		}
	})
}

func checkHead(t *testing.T, h *Head) {
	t.Helper()
	if h.Status < 100 || h.Status > 999 {
		t.Fatalf("status %d", h.Status)
	}
	if h.Chunked && h.ContentLength >= 0 {
		t.Fatal("both chunked and a Content-Length")
	}
	for _, f := range h.Fields {
		checkField(t, f)
	}
}

func checkField(t *testing.T, f Field) {
	t.Helper()
	if !ValidFieldName(f.Name) || textproto.CanonicalMIMEHeaderKey(f.Name) != f.Name {
		t.Fatalf("field name %q", f.Name)
	}
	if strings.ContainsAny(f.Value, "\r\n\x00") || !ValidFieldValue(f.Value) {
		t.Fatalf("field value %q", f.Value)
	}
}
