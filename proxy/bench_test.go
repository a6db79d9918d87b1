package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
)

// benchProxy returns a handler in front of two real loopback backends that
// answer 100 bytes, as ../shared/bench does.
func benchProxy(b *testing.B, opts ...Option) *Handler {
	body := strings.Repeat("x", 100)
	var urls []string
	for range 2 {
		be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, body)
		}))
		b.Cleanup(be.Close)
		urls = append(urls, be.URL)
	}
	return benchProxyTo(b, urls, opts...)
}

func benchProxyTo(b testing.TB, backends []string, opts ...Option) *Handler {
	var urls []string
	for _, u := range backends {
		urls = append(urls, `{ url = "`+u+`" }`)
	}
	cfg, err := config.Parse([]byte(`
[pools.app]
backends = [`+strings.Join(urls, ", ")+`]
[[routes]]
host = "app.example.com"
path_prefix = "/"
pool = "app"
`), "bench.toml")
	if err != nil {
		b.Fatal(err)
	}
	snap, err := NewSnapshot(cfg, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(snap.Close)
	return NewHandler(snap)
}

// BenchmarkProxy measures one proxied GET. "handler" calls ServeHTTP
// directly, so its allocations are the proxy's, its backend client's, and
// the test backend's and recorder's; "proxy" puts a canned backend (which
// allocates nothing, as nginx in ../shared/bench) and a reused request and
// response writer around the same call, so that what is left is the
// proxy's own; "loopback" adds a real client and Portico's own server, as
// users see it. "metrics" is "handler" with every request and attempt
// recorded.
func BenchmarkProxy(b *testing.B) {
	h := benchProxy(b)
	b.Run("handler", func(b *testing.B) { benchHandler(b, h) })
	b.Run("proxy", func(b *testing.B) {
		h := benchProxyTo(b, []string{cannedBackend(b), cannedBackend(b)})
		req := httptest.NewRequest("GET", "http://app.example.com/index.html", nil)
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			w.status = 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		}
	})
	b.Run("metrics", func(b *testing.B) { benchHandler(b, benchProxy(b, WithMetrics(metrics.New("bench")))) })
	b.Run("loopback", func(b *testing.B) { benchLoopback(b, h, "") })
	// A POST of 1 KiB: what a request body costs on the way through.
	b.Run("loopback-post", func(b *testing.B) { benchLoopback(b, h, strings.Repeat("p", 1<<10)) })
}

// benchLoopback sends requests through a real server in front of h: GETs,
// or POSTs of body when it is not empty.
func benchLoopback(b *testing.B, h *Handler, body string) {
	url := "http://" + serveFront(b, &http.Server{Handler: h}, listenLoopback(b))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			method, rd := http.MethodGet, io.Reader(nil)
			if body != "" {
				method, rd = http.MethodPost, strings.NewReader(body)
			}
			req, _ := http.NewRequest(method, url+"/index.html", rd)
			req.Host = "app.example.com"
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

func benchHandler(b *testing.B, h *Handler) {
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "http://app.example.com/index.html", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

// cannedBackend answers every request on a connection with 100 bytes,
// reading only as far as each request head's end.
func cannedBackend(b testing.TB) string {
	response := []byte("HTTP/1.1 200 OK\r\nServer: canned\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 100))
	return serveRaw(b, func(c net.Conn, _ int) {
		buf := make([]byte, 4096)
		for n := 0; ; {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
				n = copy(buf, buf[i+4:n])
				if _, err := c.Write(response); err != nil {
					return
				}
			}
		}
	}).URL
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
