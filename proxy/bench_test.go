package proxy

import (
	"io"
	"log/slog"
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
		urls = append(urls, `{ url = "`+be.URL+`" }`)
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
// directly, so its allocations are the proxy's and its backend client's;
// "loopback" adds a real client and Portico's own server, as users see it.
// "metrics" is "handler" with every request and attempt recorded.
func BenchmarkProxy(b *testing.B) {
	h := benchProxy(b)
	b.Run("handler", func(b *testing.B) { benchHandler(b, h) })
	b.Run("metrics", func(b *testing.B) { benchHandler(b, benchProxy(b, WithMetrics(metrics.New("bench")))) })
	b.Run("loopback", func(b *testing.B) { benchLoopback(b, h, "") })
	// A POST of 1 KiB: what a request body costs on the way through.
	b.Run("loopback-post", func(b *testing.B) { benchLoopback(b, h, strings.Repeat("p", 1<<10)) })
}

// benchLoopback sends requests through a real server in front of h: GETs,
// or POSTs of body when it is not empty.
func benchLoopback(b *testing.B, h *Handler, body string) {
	front := httptest.NewServer(h)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			method, rd := http.MethodGet, io.Reader(nil)
			if body != "" {
				method, rd = http.MethodPost, strings.NewReader(body)
			}
			req, _ := http.NewRequest(method, front.URL+"/index.html", rd)
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
