package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An upgrade request as curl --http2 sends it on an http:// URL.
const h2cUpgradeRequest = "GET /hello HTTP/1.1\r\nHost: app.test\r\n" +
	"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"

// With h2c on, "Upgrade: h2c" switches the connection to HTTP/2 and the
// upgraded request is answered as stream 1 with the backend's response.
func TestH2CUpgrade(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, r.Header.Get("Upgrade"))
	})
	p := startProxy(t, "[server]\nh2c = true\n"+poolConfig("", b.URL), nil)

	conn, br := dialRaw(t, p.Addr)
	writeRaw(t, conn, h2cUpgradeRequest)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(res.Header.Get("Upgrade"), "h2c") {
		t.Fatalf("got %d Upgrade %q, want 101 to h2c", res.StatusCode, res.Header.Get("Upgrade"))
	}

	writeRaw(t, conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var status string
	var body bytes.Buffer
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading HTTP/2 frames: %v (status %q, body %q so far)", err, status, body.String())
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				t.Fatalf("response on stream %d, want 1", f.StreamID)
			}
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				t.Fatal(err)
			}
		case *http2.DataFrame:
			body.Write(f.Data())
			if f.StreamEnded() {
				// The backend saw a plain GET: the upgrade stopped at the proxy.
				if status != "200" || body.String() != "GET /hello " {
					t.Errorf("stream 1: status %q body %q, want 200 \"GET /hello \"", status, body.String())
				}
				return
			}
		}
	}
}

// Without h2c, and for anything the proxy does not upgrade itself,
// "Upgrade: h2c" never reaches a backend: one that accepted it would hand
// the client a raw HTTP/2 connection past the proxy ("h2c smuggling").
func TestH2CUpgradeIsNotForwarded(t *testing.T) {
	for _, tc := range []struct{ name, server, request string }{
		{"h2c off", "", h2cUpgradeRequest},
		{"h2c on, request with a body", "h2c = true",
			"POST /hello HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
				"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\nhi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan http.Header, 1)
			b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Header.Clone()
				if r.Header.Get("Upgrade") != "" {
					// A backend willing to switch: the proxy must not let it.
					w.Header().Set("Connection", "Upgrade")
					w.Header().Set("Upgrade", "h2c")
					w.WriteHeader(http.StatusSwitchingProtocols)
					return
				}
				_, _ = io.WriteString(w, "plain")
			})
			p := startProxy(t, "[server]\n"+tc.server+"\n"+poolConfig("", b.URL), nil)

			res, body := rawRoundTrip(t, p.Addr, tc.request)
			if res.StatusCode != http.StatusOK || body != "plain" {
				t.Errorf("got %d %q, want 200 \"plain\" over HTTP/1.1", res.StatusCode, body)
			}
			h := <-seen
			for _, name := range []string{"Upgrade", "Http2-Settings"} {
				if v := h.Values(name); len(v) > 0 {
					t.Errorf("backend received %s: %q", name, v)
				}
			}
		})
	}
}

// HTTP/2 carries the method and the request-target in fields that may hold
// spaces, which an HTTP/1.1 request line cannot: net/http's HTTP/2 server
// checks neither for them. A method with a space in it would put a second
// target in the line the backend reads ("GET /admin /public HTTP/1.1"),
// behind the back of the route that matched /public; it is refused at the
// front door. A space in the query is escaped, as one in the path is.
func TestHTTP2RequestLineFieldsCannotSplitTheBackendsRequestLine(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		status             string
		line               string // the request line the backend must see, "" for none
	}{
		{"space in the method", "GET /admin", "/public", "400", ""},
		{"tab in the method", "GET\t/admin", "/public", "400", ""},
		{"space in the query", "GET", "/public?q=a HTTP/1.1 b", "200", "GET /public?q=a%20HTTP/1.1%20b HTTP/1.1"},
		{"plain request", "GET", "/public?q=a", "200", "GET /public?q=a HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, reqs := startWireBackend(t, okResponse)
			p := startProxy(t, "[server]\nh2c = true\n"+poolConfig("retries = 0", url), nil)
			conn, br := dialRaw(t, p.Addr)
			c := newH2CClient(t, conn, br)
			c.send(1, requestFields(tc.method, tc.path))
			if status := c.awaitStatus(1); status != tc.status {
				t.Errorf("status %q, want %s", status, tc.status)
			}
			select {
			case m := <-reqs:
				if m.StartLine != tc.line {
					t.Errorf("backend read the request line %q, want %q", m.StartLine, tc.line)
				}
			default:
				if tc.line != "" {
					t.Errorf("the request did not reach the backend")
				}
			}
		})
	}
}

func requestFields(method, path string) []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "app.test"}, {Name: ":path", Value: path},
	}
}

// h2cClient speaks just enough cleartext HTTP/2 (prior knowledge) for these
// tests, without the checks an HTTP/2 client library makes on what it sends.
type h2cClient struct {
	t      *testing.T
	fr     *http2.Framer
	dec    *hpack.Decoder
	status string // of the header block decoded last
}

func newH2CClient(t *testing.T, conn net.Conn, br *bufio.Reader) *h2cClient {
	t.Helper()
	writeRaw(t, conn, http2.ClientPreface)
	c := &h2cClient{t: t, fr: http2.NewFramer(conn, br)}
	c.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			c.status = f.Value
		}
	})
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// send sends a request without a body on stream id.
func (c *h2cClient) send(id uint32, fields []hpack.HeaderField) {
	c.t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// awaitStatus reads frames until the final response head on stream id and
// returns its :status, or "" if the stream is reset.
func (c *h2cClient) awaitStatus(id uint32) string {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading HTTP/2 frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = c.fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return ""
			}
		case *http2.HeadersFrame:
			c.status = ""
			if _, err := c.dec.Write(f.HeaderBlockFragment()); err != nil {
				c.t.Fatal(err)
			}
			if f.StreamID == id && c.status != "" && c.status[0] != '1' {
				return c.status
			}
		}
	}
}
