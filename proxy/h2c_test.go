package proxy

import (
	"bytes"
	"fmt"
	"io"
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
