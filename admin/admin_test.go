package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/portico/portico/balancer"
)

func testPools(t *testing.T) []*balancer.Pool {
	t.Helper()
	var bs []*balancer.Backend
	for i, host := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		b, err := balancer.NewBackend(&url.URL{Scheme: "http", Host: host}, i+1)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	p, err := balancer.NewPool("app", bs, balancer.Options{Policy: balancer.LeastConn})
	if err != nil {
		t.Fatal(err)
	}
	return []*balancer.Pool{p}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestHealthz(t *testing.T) {
	if code, body := get(t, Handler(func() []*balancer.Pool { return nil }, nil), "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
}

// /api/pools reads live state: a change to a backend shows on the next request.
func TestPoolsReflectLiveState(t *testing.T) {
	pools := testPools(t)
	h := Handler(func() []*balancer.Pool { return pools }, nil)
	bs := pools[0].Backends()
	b, err := pools[0].Acquire(context.Background(), balancer.Tried(0).Add(bs[0]))
	if err != nil || b != bs[1] {
		t.Fatalf("Acquire = %v, %v; want the second backend", b, err)
	}
	defer b.Release()
	b.SetUsable(false)

	code, body := get(t, h, "/api/pools")
	if code != 200 {
		t.Fatalf("GET /api/pools = %d", code)
	}
	var views []PoolView
	if err := json.Unmarshal([]byte(body), &views); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	type seen struct {
		URL      string
		Weight   int
		Usable   bool
		InFlight int64
	}
	want := []seen{{"http://10.0.0.1:80", 1, true, 0}, {"http://10.0.0.2:80", 2, false, 1}}
	if len(views) != 1 || views[0].Name != "app" || len(views[0].Backends) != len(want) {
		t.Fatalf("GET /api/pools = %+v, want pool app with 2 backends", views)
	}
	for i, bv := range views[0].Backends {
		if got := (seen{bv.URL, bv.Weight, bv.Usable, bv.InFlight}); got != want[i] {
			t.Errorf("backend %d = %+v, want %+v", i, got, want[i])
		}
	}
}

func TestIndexAndProfiles(t *testing.T) {
	h := Handler(func() []*balancer.Pool { return nil }, nil)
	if code, body := get(t, h, "/"); code != 200 || !strings.Contains(body, "/api/pools") {
		t.Errorf("GET / = %d %q, want the list of endpoints", code, body)
	}
	if code, body := get(t, h, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/ = %d, want the profile index", code)
	}
	if code, _ := get(t, h, "/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}
