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

	"github.com/portico/portico/reqinfo"
)

// Requests that outlive the server's own deadlines, and upgraded connections,
// through the proxy and Portico's HTTP/1.1 server.

// A backend slower than read_header_timeout answers a GET on a fresh
// connection: the deadline the server set for the head, passing during the
// handler, must not be taken for the client leaving, which would cancel the
// request and abort the backend exchange.
func TestSlowBackendOutlivesReadHeaderTimeout(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(900 * time.Millisecond)
		_, _ = io.WriteString(w, "slow ok")
	})
	p := startProxy(t, "[server]\nread_header_timeout = \"300ms\"\n"+poolConfig("", b.URL), nil)
	res, body := rawRoundTrip(t, p.Addr, "GET / HTTP/1.1\r\nHost: x.test\r\n\r\n")
	if res.StatusCode != 200 || body != "slow ok" {
		t.Fatalf("got %d %q, want 200 \"slow ok\"", res.StatusCode, body)
	}
}

// The same for a stream of server-sent events that lasts longer than
// read_header_timeout.
func TestEventStreamOutlivesReadHeaderTimeout(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 10 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	p := startProxy(t, "[server]\nread_header_timeout = \"300ms\"\n"+poolConfig("", b.URL), nil)
	conn, br := dialRaw(t, p.Addr)
	writeRaw(t, conn, "GET /events HTTP/1.1\r\nHost: x.test\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	if n := strings.Count(string(body), "data: "); err != nil || n != 10 {
		t.Fatalf("got %d events, %v; want 10 (body %q)", n, err, body)
	}
}

// A WebSocket opened on a kept-alive connection outlives the send_timeout
// write deadline the previous response left on the connection: Hijack must
// clear it, as net/http's does.
func TestUpgradeOnReusedConnectionOutlivesSendTimeout(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a" {
			_, _ = io.WriteString(w, "a")
			return
		}
		upgradeEcho(w, r)
	})
	p := startProxy(t, "[server]\nsend_timeout = \"300ms\"\n"+poolConfig("", b.URL), nil)
	conn, br := dialRaw(t, p.Addr)
	writeRaw(t, conn, "GET /a HTTP/1.1\r\nHost: ws.test\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	writeRaw(t, conn, upgradeRequest)
	if res, err = http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", res, err)
	}
	time.Sleep(600 * time.Millisecond) // past the earlier response's write deadline
	writeRaw(t, conn, "hello")
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo %q, %v; want \"hello\"", got, err)
	}
}

// The HTTP/2 streams of a connection upgraded with "Upgrade: h2c" are
// requests of their own, each with its own record: their base context is
// the upgrade request's, which carries that request's reqinfo.Info (the h1
// server puts it there), and must not pass it on, or every stream would
// write the same record, concurrently.
func TestH2CStreamsGetTheirOwnRecord(t *testing.T) {
	infos := make(chan [2]any, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infos <- [2]any{r.URL.Path, reqinfo.From(r.Context())}
		_, _ = io.WriteString(w, "ok")
	})
	cfg := parseConfig(t, "[server]\nh2c = true\n"+poolConfig("", "http://127.0.0.1:9"), nil)
	srv, err := NewServer(&cfg.Server, h, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	_, br, _ := upgradeAndGet(t, serveFront(t, srv, listenLoopback(t)), "/two")
	go func() { _, _ = io.Copy(io.Discard, br) }()
	got := map[any]*reqinfo.Info{}
	for range 2 {
		select {
		case v := <-infos:
			got[v[0]] = v[1].(*reqinfo.Info)
		case <-time.After(ioTimeout):
			t.Fatalf("requests seen: %v", got)
		}
	}
	if up, two := got["/hello"], got["/two"]; two != nil && two == up {
		t.Errorf("stream 3 carries the upgrade request's record (%p): every stream of the connection shares it", two)
	}
}

// The same through the proxy's own handler, under -race: the upgraded
// connection's streams write one reqinfo.Info concurrently.
func TestH2CStreamsRaceOnTheRecord(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	})
	p := startProxy(t, "[server]\nh2c = true\n"+poolConfig("", b.URL), nil)
	conn, _, fr := upgradeAndGet(t, p.Addr, "/s3", "/s5")
	_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
	for ended := 0; ended < 3; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				ended++
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				ended++
			}
		}
	}
}

// upgradeAndGet upgrades a new connection to addr with "Upgrade: h2c" (its
// request is stream 1) and opens a GET stream for each path: 3, 5, and on.
func upgradeAndGet(t *testing.T, addr string, paths ...string) (net.Conn, *bufio.Reader, *http2.Framer) {
	t.Helper()
	conn, br := dialRaw(t, addr)
	writeRaw(t, conn, h2cUpgradeRequest)
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", res, err)
	}
	writeRaw(t, conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for i, path := range paths {
		id := uint32(3 + 2*i)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "app.test"}, {":path", path}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	return conn, br, fr
}
