package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico/portico/proxy"
)

// slowSetup is a proxy in front of a backend that holds each request until
// release is closed; entered gets a value as each request reaches it.
type slowSetup struct {
	url              string
	entered, release chan struct{}
	h                *proxy.Handler
	snapshot         func(doc string) *proxy.Snapshot // doc's snapshot, taking over h's
}

func slowRoute(t *testing.T, doc string) *slowSetup {
	t.Helper()
	s := &slowSetup{entered: make(chan struct{}, 100), release: make(chan struct{})}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.entered <- struct{}{}
		select {
		case <-s.release:
		case <-time.After(ioTimeout):
		}
		_, _ = w.Write([]byte("backend saw " + r.URL.Path))
	}))
	t.Cleanup(be.Close)
	s.snapshot = func(doc string) *proxy.Snapshot {
		t.Helper()
		cfg := parse(t, doc+"\n[pools.p]\nbackends = [{ url = \"${be}\" }]\n", be.URL)
		var opts []proxy.Option
		if s.h != nil {
			opts = append(opts, proxy.WithPrevious(s.h.Snapshot()))
		}
		snap, err := proxy.NewSnapshot(cfg, discard, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(snap.Close)
		return snap
	}
	s.h = proxy.NewHandler(s.snapshot(doc))
	front := httptest.NewServer(s.h)
	t.Cleanup(front.Close)
	s.url = front.URL
	return s
}

func TestConcurrencyLimitPerRoute(t *testing.T) {
	s := slowRoute(t, `
[middlewares.two]
type = "concurrency_limit"
max = 2
[[routes]]
pool = "p"
path_prefix = "/a"
middlewares = ["two"]
[[routes]]
pool = "p"
path_prefix = "/b"
middlewares = ["two"]
`)
	var wg sync.WaitGroup
	for _, p := range []string{"/a", "/a", "/b"} { // /b has its own two slots
		wg.Go(func() {
			if res, body := get(t, s.url+p); res.StatusCode != 200 {
				t.Errorf("%s: %d %q", p, res.StatusCode, body)
			}
		})
		<-s.entered
	}
	res, body := get(t, s.url+"/a")
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" || strings.HasPrefix(body, "backend") {
		t.Fatalf("third /a: %d %q Retry-After %q; want 503 with Retry-After", res.StatusCode, body, res.Header.Get("Retry-After"))
	}
	close(s.release)
	wg.Wait()
	if res, _ := get(t, s.url+"/a"); res.StatusCode != 200 {
		t.Fatalf("after release: %d", res.StatusCode)
	}
}

// With a queue timeout an excess request waits for a slot.
func TestConcurrencyLimitQueues(t *testing.T) {
	s := slowRoute(t, `
[middlewares.one]
type = "concurrency_limit"
max = 1
key = "header:X-Tenant"
queue_timeout = "2s"
[[routes]]
pool = "p"
middlewares = ["one"]
`)
	var wg sync.WaitGroup
	wg.Go(func() { get(t, s.url+"/", "X-Tenant: a") })
	<-s.entered
	// Another tenant has its own slot.
	wg.Go(func() { get(t, s.url+"/", "X-Tenant: b") })
	<-s.entered
	done := make(chan int)
	go func() {
		res, _ := get(t, s.url+"/", "X-Tenant: a")
		done <- res.StatusCode
	}()
	select {
	case code := <-done:
		t.Fatalf("queued request answered %d before a slot was free", code)
	case <-time.After(100 * time.Millisecond):
	}
	close(s.release)
	if code := <-done; code != 200 {
		t.Fatalf("queued request: %d, want 200", code)
	}
	wg.Wait()
}

// A reload that keeps a concurrency_limit's options keeps its slots:
// requests still running on the old snapshot hold theirs, so the new
// snapshot does not let max more through beside them.
func TestConcurrencySlotsCarriedAcrossSnapshots(t *testing.T) {
	doc := `
[middlewares.one]
type = "concurrency_limit"
max = 1
[[routes]]
pool = "p"
middlewares = ["one"]
`
	s := slowRoute(t, doc)
	done := make(chan int, 1)
	go func() {
		res, _ := get(t, s.url+"/")
		done <- res.StatusCode
	}()
	<-s.entered
	s.h.Swap(s.snapshot(doc))
	if res, body := get(t, s.url+"/"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a second request on the new snapshot, the first still running on the old: %d %q, want 503", res.StatusCode, body)
	}
	close(s.release)
	if code := <-done; code != 200 {
		t.Fatalf("the request running across the reload: %d, want 200", code)
	}
	if res, _ := get(t, s.url+"/"); res.StatusCode != 200 {
		t.Errorf("after it ended: %d, want 200 (its slot freed for the new snapshot)", res.StatusCode)
	}
}

func TestRateLimitKeys(t *testing.T) {
	s := start(t, `
[middlewares.perkey]
type = "rate_limit"
rate = "1/h"
burst = 1
key = "header:X-Api-Tenant"
[middlewares.perroute]
type = "rate_limit"
rate = "1/h"
burst = 2
key = "route"
[[routes]]
pool = "p"
path_prefix = "/k"
middlewares = ["perkey"]
[[routes]]
pool = "p"
path_prefix = "/r"
middlewares = ["perroute"]
`)
	for _, tc := range []struct {
		path, header string
		want         int
	}{
		{"/k", "X-Api-Tenant: a", 200},
		{"/k", "X-Api-Tenant: a", 429},
		{"/k", "X-Api-Tenant: b", 200},
		{"/k", "", 200}, // no header: one shared bucket
		{"/k", "", 429},
		{"/r", "", 200},
		{"/r", "", 200},
		{"/r", "", 429},
	} {
		var hs []string
		if tc.header != "" {
			hs = append(hs, tc.header)
		}
		res, body := get(t, s.URL+tc.path, hs...)
		s.expect(t, res, body, tc.want, tc.want == 200)
		if res.Header.Get("Ratelimit") == "" || res.Header.Get("Ratelimit-Policy") == "" {
			t.Errorf("%s %q: no RateLimit fields", tc.path, tc.header)
		}
	}
}

// A new snapshot with the same rate_limit options keeps its buckets (a
// reload must not hand every client a fresh burst); changed options start
// afresh. (Concurrency slots: TestConcurrencySlotsCarriedAcrossSnapshots.)
func TestStateCarriedAcrossSnapshots(t *testing.T) {
	doc := func(rate string) string {
		return `
[middlewares.limit]
type = "rate_limit"
rate = "` + rate + `"
burst = 1
[[routes]]
pool = "p"
middlewares = ["limit"]
`
	}
	s := start(t, doc("1/h"))
	if res, _ := get(t, s.URL+"/"); res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	swap := func(rate string) {
		cfg := parse(t, doc(rate)+"\n[pools.p]\nbackends = [{ url = \"${be}\" }]\n", s.be.URL)
		next, err := proxy.NewSnapshot(cfg, discard, proxy.WithPrevious(s.h.Snapshot()))
		if err != nil {
			t.Fatal(err)
		}
		s.h.Swap(next).Close()
	}
	swap("1/h")
	if res, _ := get(t, s.URL+"/"); res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after a reload with the same options: %d, want 429 (bucket kept)", res.StatusCode)
	}
	swap("2/h")
	if res, _ := get(t, s.URL+"/"); res.StatusCode != 200 {
		t.Fatalf("after a reload with new options: %d, want 200 (new buckets)", res.StatusCode)
	}
}
