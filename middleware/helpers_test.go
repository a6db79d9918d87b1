package middleware_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/middleware"
	"github.com/portico/portico/proxy"
)

// These tests run middlewares where they run in production: in a route's
// chain inside proxy.Handler, in front of a real loopback backend.

const ioTimeout = 5 * time.Second

var discard = slog.New(slog.DiscardHandler)

// backend is a loopback server that records the requests reaching it.
type backend struct {
	*httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	last *http.Request // headers and URL of the last request
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		b.last = r.Clone(context.Background())
		b.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "backend saw "+r.URL.Path)
	}))
	t.Cleanup(b.Close)
	return b
}

// lastRequest is the last request the backend received.
func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// setup is a proxy serving a configuration with ${be} replaced by a
// backend's URL.
type setup struct {
	URL  string
	be   *backend
	snap *proxy.Snapshot
	h    *proxy.Handler
	cfg  *config.Config
}

func parse(t *testing.T, doc string, be string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(strings.ReplaceAll(doc, "${be}", be)), "test.toml")
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	return cfg
}

// start serves doc, whose routes use pool "p" (added here) unless they say
// otherwise.
func start(t *testing.T, doc string, opts ...proxy.Option) *setup {
	t.Helper()
	be := startBackend(t)
	cfg := parse(t, doc+"\n[pools.p]\nbackends = [{ url = \"${be}\" }]\n", be.URL)
	snap, err := proxy.NewSnapshot(cfg, discard, opts...)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	h := proxy.NewHandler(snap)
	front := httptest.NewServer(h)
	t.Cleanup(func() {
		front.Close()
		h.Snapshot().Close()
	})
	return &setup{URL: front.URL, be: be, snap: snap, h: h, cfg: cfg}
}

// client never follows redirects: their targets are not on this machine.
var client = &http.Client{
	Transport:     &http.Transport{Proxy: nil, DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// get sends a GET with the given headers ("Name: value") and returns the
// response and its body.
func get(t *testing.T, url string, headers ...string) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, url, nil, headers...)
}

func do(t *testing.T, method, url string, body io.Reader, headers ...string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return res, string(b)
}

// expect checks a status and that the backend was reached (or not).
func (s *setup) expect(t *testing.T, res *http.Response, body string, status int, reached bool) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d; body %q", res.StatusCode, status, body)
	}
	if got := strings.HasPrefix(body, "backend saw"); got != reached {
		t.Fatalf("backend reached = %v, want %v; body %q", got, reached, body)
	}
}

// counters records refusals by middleware and reason.
type counters struct {
	mu sync.Mutex
	n  map[string]int
}

type counter struct {
	c   *counters
	key string
}

func (c counter) Inc() {
	c.c.mu.Lock()
	c.c.n[c.key]++
	c.c.mu.Unlock()
}

func newCounters() *counters { return &counters{n: map[string]int{}} }

func (c *counters) rejections(mw, reason string) middleware.Counter {
	return counter{c, mw + "/" + reason}
}

func (c *counters) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
