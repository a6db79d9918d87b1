package compress

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/portico/portico/config"
)

func newCompress(t *testing.T, o *config.Compress) func(http.Handler) http.Handler {
	t.Helper()
	if o == nil {
		o = &config.Compress{Encodings: config.DefaultCompressEncodings, Types: config.DefaultCompressTypes, MinLength: config.DefaultCompressMinLength}
	}
	return New(o)
}

func TestNegotiate(t *testing.T) {
	prefs := []*encoding{encodings["zstd"], encodings["br"], encodings["gzip"]}
	for _, tc := range []struct {
		accept []string
		want   string
	}{
		{nil, ""},
		{[]string{"gzip"}, "gzip"},
		{[]string{"gzip, br"}, "br"},                        // equal q: the server's order
		{[]string{"gzip, br, zstd"}, "zstd"},                // ditto
		{[]string{"gzip;q=1.0, br;q=0.5"}, "gzip"},          // the client's q first
		{[]string{"zstd;q=0, br;q=0"}, ""},                  // refused
		{[]string{"*"}, "zstd"},                             // anything
		{[]string{"*;q=0.1, gzip;q=0.5"}, "gzip"},           // explicit beats *
		{[]string{"*, zstd;q=0"}, "br"},                     // * with one refused
		{[]string{"GZIP ; Q=0.8"}, "gzip"},                  // case-insensitive
		{[]string{"br;q=bogus, gzip;q=0.1"}, "gzip"},        // an unreadable q refuses
		{[]string{"identity"}, ""},                          // only identity
		{[]string{"deflate, gzip;q=0.2", "br;q=0.3"}, "br"}, // several lines
	} {
		got := ""
		if e := negotiate(tc.accept, prefs); e != nil {
			got = e.name
		}
		if got != tc.want {
			t.Errorf("Accept-Encoding %q: got %q, want %q", tc.accept, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { negotiate([]string{"gzip;q=0.8, br, zstd;q=0.1"}, prefs) }); n != 0 {
		t.Errorf("negotiate allocates %v times", n)
	}
}

func decode(t *testing.T, enc string, body []byte) string {
	t.Helper()
	var r io.Reader
	switch enc {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		return string(body)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return string(out)
}

var text = strings.Repeat("Portico compresses text. ", 200) // 5000 bytes

// origin answers with the given headers and status, and text as body.
func origin(status int, headers ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ": ")
			w.Header().Add(k, v)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, text)
	})
}

func TestWhenToCompress(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		headers  []string
		reqHdrs  []string
		method   string
		wantEnc  string
		wantVary bool
	}{
		{"html", 200, []string{"Content-Type: text/html; charset=utf-8"}, []string{"Accept-Encoding: gzip"}, "GET", "gzip", true},
		{"json with length", 200, []string{"Content-Type: application/json", "Content-Length: 5000"}, []string{"Accept-Encoding: br"}, "GET", "br", true},
		{"client accepts nothing", 200, []string{"Content-Type: text/plain"}, nil, "GET", "", true},
		{"image", 200, []string{"Content-Type: image/png"}, []string{"Accept-Encoding: gzip"}, "GET", "", false},
		{"no type", 200, nil, []string{"Accept-Encoding: gzip"}, "GET", "", false},
		{"short", 200, []string{"Content-Type: text/plain", "Content-Length: 100"}, []string{"Accept-Encoding: gzip"}, "GET", "", false},
		{"already encoded", 200, []string{"Content-Type: text/plain", "Content-Encoding: gzip"}, []string{"Accept-Encoding: zstd"}, "GET", "gzip", false},
		{"no-transform", 200, []string{"Content-Type: text/plain", "Cache-Control: public, no-transform"}, []string{"Accept-Encoding: gzip"}, "GET", "", false},
		{"partial content", 206, []string{"Content-Type: text/plain"}, []string{"Accept-Encoding: gzip"}, "GET", "", false},
		{"range request", 200, []string{"Content-Type: text/plain"}, []string{"Accept-Encoding: gzip", "Range: bytes=0-10"}, "GET", "", false},
		{"not found page", 404, []string{"Content-Type: text/html"}, []string{"Accept-Encoding: gzip"}, "GET", "", false},
		{"svg", 200, []string{"Content-Type: image/svg+xml"}, []string{"Accept-Encoding: zstd"}, "GET", "zstd", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCompress(t, nil)(origin(tc.status, tc.headers...))
			req := httptest.NewRequest(tc.method, "/", nil)
			for _, rh := range tc.reqHdrs {
				k, v, _ := strings.Cut(rh, ": ")
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			if got := res.Header.Get("Content-Encoding"); got != tc.wantEnc {
				t.Fatalf("Content-Encoding %q, want %q", got, tc.wantEnc)
			}
			if got := strings.Contains(res.Header.Get("Vary"), "Accept-Encoding"); got != tc.wantVary {
				t.Errorf("Vary %q, want Accept-Encoding: %v", res.Header.Get("Vary"), tc.wantVary)
			}
			body := rec.Body.Bytes()
			if tc.wantEnc != "" && tc.headers[len(tc.headers)-1] != "Content-Encoding: gzip" {
				if len(body) >= len(text) {
					t.Errorf("%d bytes encoded, from %d", len(body), len(text))
				}
				if res.Header.Get("Content-Length") != "" {
					t.Error("Content-Length kept on an encoded body")
				}
				if got := decode(t, tc.wantEnc, body); got != text {
					t.Errorf("decoded body differs (%d bytes)", len(got))
				}
			}
		})
	}
}

func TestETagWeakenedAndVaryMerged(t *testing.T) {
	h := newCompress(t, nil)(origin(200, "Content-Type: text/css", `Etag: "abc"`, "Vary: Origin", "Accept-Ranges: bytes"))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("Etag"); got != `W/"abc"` {
		t.Errorf("ETag %q, want W/\"abc\"", got)
	}
	if got := rec.Header().Values("Vary"); strings.Join(got, ",") != "Origin,Accept-Encoding" {
		t.Errorf("Vary %q", got)
	}
	if rec.Header().Get("Accept-Ranges") != "" {
		t.Error("Accept-Ranges kept: ranges of the encoded body are not served")
	}
}

// Server-sent events arrive one by one through a real server: each flush
// goes through the encoder. An interim 103 passes before them.
func TestServerSentEventsFlushedAndInterimPassed(t *testing.T) {
	next := make(chan struct{})
	sse := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range 3 {
			_, _ = io.WriteString(w, "data: event "+strconv.Itoa(i)+"\n\n")
			if err := rc.Flush(); err != nil {
				t.Errorf("flush: %v", err)
				return
			}
			select {
			case <-next:
			case <-time.After(5 * time.Second):
				return
			}
		}
	})
	srv := httptest.NewServer(newCompress(t, nil)(sse))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
	br := bufio.NewReader(conn)
	interim, err := http.ReadResponse(br, nil)
	if err != nil || interim.StatusCode != http.StatusEarlyHints {
		t.Fatalf("first response %v, err %v; want 103", interim, err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(zr)
	for i := range 3 {
		line, err := lines.ReadString('\n')
		if err != nil || line != "data: event "+strconv.Itoa(i)+"\n" {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		_, _ = lines.ReadString('\n')
		next <- struct{}{} // the next event is only written after this one arrived
	}
}

// The wrapper keeps http.ResponseController working: a handler behind it
// can still hijack the connection.
func TestHijackThroughWrapper(t *testing.T) {
	srv := httptest.NewServer(newCompress(t, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhello")
		_ = brw.Flush()
		_ = conn.Close()
	})))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	out, _ := io.ReadAll(conn)
	if !strings.HasSuffix(string(out), "hello") || !strings.HasPrefix(string(out), "HTTP/1.1 101") {
		t.Fatalf("got %q", out)
	}
}

// BenchmarkCompress is the accept path: a 5,000-byte text response encoded
// with each encoding, encoders from the pool.
func BenchmarkCompress(b *testing.B) {
	for _, enc := range []string{"gzip", "br", "zstd"} {
		b.Run(enc, func(b *testing.B) {
			h := New(&config.Compress{Encodings: []string{enc}, Types: []string{"text/*"}, MinLength: 1024})(origin(200, "Content-Type: text/plain"))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Accept-Encoding", enc)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
